"""Exercises for lesson 02: im2col by hand.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/02_convolution_three_ways.py --exercises
"""
import numpy as np  # noqa: F401  (you will want it)


def im2col(x_n, k):
    """Copy every k x k window of one image into a column.

    x_n: (C, H, W) -> cols: (C*k*k, Ho*Wo) with Ho = H-k+1, Wo = W-k+1.
    Row (c, ky, kx) (in that order, like w.reshape(F, -1)) of column i*Wo + j holds
    x_n[c, i+ky, j+kx]. Use loops over ky, kx and slices (no sliding_window_view).
    """
    raise NotImplementedError("exercise: write this function")


def conv_im2col(x, w, b):
    """A valid, stride-1 convolution as one matrix product per image, using your im2col.

    x: (N, C, H, W), w: (F, C, k, k), b: (F,) -> y: (N, F, H-k+1, W-k+1).
    """
    raise NotImplementedError("exercise: write this function")


def im2col_bytes(C, H, W, k, itemsize):
    """How many bytes the im2col matrix of one (C, H, W) image and a k x k kernel takes."""
    raise NotImplementedError("exercise: write this function")
