"""Exercises for lesson 06: the losses of Net.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/06_net_forward_backward.py --exercises
"""
import numpy as np  # noqa: F401  (you will want it)


def mse_backward(a, target):
    """d/da of mean((a - target)^2), the content loss's backward (same shape as a)."""
    raise NotImplementedError("exercise: write this function")


def style_loss(g_feats, s_feats):
    """pytorch-AdaIN's style loss: sum over layers of mse(mean_g, mean_s) + mse(std_g, std_s).

    g_feats, s_feats: lists of (N, C_i, H_i, W_i) features (the decoded image's and the
    style's, layer by layer; sizes may differ within a layer). Returns a float.
    """
    raise NotImplementedError("exercise: write this function")
