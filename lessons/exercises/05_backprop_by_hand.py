"""Exercises for lesson 05: backward passes by hand.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/05_backprop_by_hand.py --exercises
"""
import numpy as np  # noqa: F401  (you will want it)


def mean_std_backward(dmean, dstd, x, mean, std):
    """The backward of instance mean/std (unbiased variance, eps inside the sqrt).

    x: (N, C, H, W); mean, std: its statistics (N, C, 1, 1); dmean, dstd: dL/dmean,
    dL/dstd (N, C, 1, 1). Return dL/dx (N, C, H, W).
    """
    raise NotImplementedError("exercise: write this function")


def adain_style_backward(dt, content, style):
    """dL/dstyle for t = AdaIN(content, style) (alpha 1, eps 1e-5), given dt = dL/dt.

    content: (N, C, H, W), style: (N, C, Hs, Ws), dt like content -> (N, C, Hs, Ws).
    t = std_s * normalized + mean_s with normalized = (content - mean_c) / std_c.
    """
    raise NotImplementedError("exercise: write this function")


def maxpool_backward_ties(dout, x):
    """The backward of the 2x2, stride-2, CEIL-mode max-pool, with ties as torch breaks them.

    x: (N, C, H, W) the pool's input (may hold equal values in a window, H and W may be
    odd); dout: (N, C, ceil(H/2), ceil(W/2)). Each window's gradient goes to ONE input:
    its first maximum in the order top-left, top-right, bottom-left, bottom-right.
    Return dx (N, C, H, W).
    """
    raise NotImplementedError("exercise: write this function")
