"""Exercises for lesson 02: im2col by hand.

Grade them with:  python lessons/02_convolution_three_ways.py --exercises
"""
import numpy as np


def im2col(x_n, k):
    """Copy every k x k window of one image into a column.

    x_n: (C, H, W) -> cols: (C*k*k, Ho*Wo) with Ho = H-k+1, Wo = W-k+1.
    Row (c, ky, kx) (in that order, like w.reshape(F, -1)) of column i*Wo + j holds
    x_n[c, i+ky, j+kx]. Use loops over ky, kx and slices (no sliding_window_view).
    """
    C, H, W = x_n.shape
    Ho, Wo = H - k + 1, W - k + 1
    cols = np.empty((C, k, k, Ho, Wo), dtype=x_n.dtype)
    for ky in range(k):
        for kx in range(k):
            cols[:, ky, kx] = x_n[:, ky:ky + Ho, kx:kx + Wo]
    return cols.reshape(C * k * k, Ho * Wo)


def conv_im2col(x, w, b):
    """A valid, stride-1 convolution as one matrix product per image, using your im2col.

    x: (N, C, H, W), w: (F, C, k, k), b: (F,) -> y: (N, F, H-k+1, W-k+1).
    """
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    Ho, Wo = H - k + 1, W - k + 1
    w_mat = w.reshape(F, C * k * k)
    return np.stack([(w_mat @ im2col(x[n], k) + b[:, None]).reshape(F, Ho, Wo) for n in range(N)])


def im2col_bytes(C, H, W, k, itemsize):
    """How many bytes the im2col matrix of one (C, H, W) image and a k x k kernel takes."""
    return C * k * k * (H - k + 1) * (W - k + 1) * itemsize
