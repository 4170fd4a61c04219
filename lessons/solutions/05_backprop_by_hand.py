"""Exercises for lesson 05: backward passes by hand.

Grade them with:  python lessons/05_backprop_by_hand.py --exercises
"""
import numpy as np


def mean_std_backward(dmean, dstd, x, mean, std):
    """The backward of instance mean/std (unbiased variance, eps inside the sqrt).

    x: (N, C, H, W); mean, std: its statistics (N, C, 1, 1); dmean, dstd: dL/dmean,
    dL/dstd (N, C, 1, 1). Return dL/dx (N, C, H, W).
    """
    L = x.shape[2] * x.shape[3]
    return dmean / L + dstd * (x - mean) / ((L - 1) * std)


def _mean_std(x, eps=1e-5):
    flat = x.reshape(*x.shape[:2], -1)
    mean = flat.mean(axis=2)[..., None, None]
    std = np.sqrt(flat.var(axis=2, ddof=1) + eps)[..., None, None]
    return mean, std


def adain_style_backward(dt, content, style):
    """dL/dstyle for t = AdaIN(content, style) (alpha 1, eps 1e-5), given dt = dL/dt.

    content: (N, C, H, W), style: (N, C, Hs, Ws), dt like content -> (N, C, Hs, Ws).
    t = std_s * normalized + mean_s with normalized = (content - mean_c) / std_c.
    """
    mc, sc = _mean_std(content)
    ms, ss = _mean_std(style)
    normalized = (content - mc) / sc
    dmean_s = dt.sum(axis=(2, 3), keepdims=True)
    dstd_s = (dt * normalized).sum(axis=(2, 3), keepdims=True)
    return mean_std_backward(dmean_s, dstd_s, style, ms, ss)


def maxpool_backward_ties(dout, x):
    """The backward of the 2x2, stride-2, CEIL-mode max-pool, with ties as torch breaks them.

    x: (N, C, H, W) the pool's input (may hold equal values in a window, H and W may be
    odd); dout: (N, C, ceil(H/2), ceil(W/2)). Each window's gradient goes to ONE input:
    its first maximum in the order top-left, top-right, bottom-left, bottom-right.
    Return dx (N, C, H, W).
    """
    N, C, H, W = x.shape
    Ho, Wo = dout.shape[2:]
    padded = np.full((N, C, 2 * Ho, 2 * Wo), -np.inf)
    padded[:, :, :H, :W] = x
    best = padded[:, :, 0::2, 0::2].copy()
    which = np.zeros(best.shape, dtype=int)
    for k, (dy, dx) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
        candidate = padded[:, :, dy::2, dx::2]
        better = candidate > best
        best = np.where(better, candidate, best)
        which = np.where(better, k, which)
    dpadded = np.zeros_like(padded)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        dpadded[:, :, dy::2, dx::2] = dout * (which == k)
    return dpadded[:, :, :H, :W]
