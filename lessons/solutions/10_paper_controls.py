"""Exercises for lesson 10: colour preservation and style interpolation.

Grade them with:  python lessons/10_paper_controls.py --exercises
"""
import numpy as np


def _mat_sqrt(a):
    u, d, vt = np.linalg.svd(a)
    return (u * np.sqrt(d)) @ vt


def coral_pixels(source, target):
    """pytorch-AdaIN's coral: recolour source (3, H, W) to target's (3, H', W') colours.

    Standardise each channel of both (mean, unbiased std), take C = X X^T + I of the
    standardised pixels (3 x 3, NOT divided by the pixel count), and return
    sqrt(C_t) inv(sqrt(C_s)) x_s_norm * std_t + mean_t, reshaped to (3, H, W).
    Matrix square roots by SVD: U diag(sqrt(d)) V^T.
    """
    def standardise(img):
        flat = np.asarray(img, dtype=np.float64).reshape(3, -1)
        mean = flat.mean(axis=1, keepdims=True)
        std = flat.std(axis=1, ddof=1, keepdims=True)
        norm = (flat - mean) / std
        return norm, mean, std, norm @ norm.T + np.eye(3)

    xs, _, _, cs = standardise(source)
    _, mt, st, ct = standardise(target)
    out = (_mat_sqrt(ct) @ np.linalg.inv(_mat_sqrt(cs)) @ xs) * st + mt
    return out.reshape(np.shape(source))


def interpolate_styles(content, styles, weights):
    """test.py's style interpolation: sum over i of weights[i] * AdaIN(content, styles[i]).

    content (1, C, H, W), styles a list of (1, C, Hs, Ws), weights summing to 1.
    """
    def mean_std(x):
        flat = x.reshape(*x.shape[:2], -1)
        return flat.mean(axis=2)[..., None, None], np.sqrt(flat.var(axis=2, ddof=1) + 1e-5)[..., None, None]

    mc, sc = mean_std(content)
    normalized = (content - mc) / sc
    out = 0.0
    for w, s in zip(weights, styles):
        ms, ss = mean_std(s)
        out = out + w * (normalized * ss + ms)
    return out
