"""Exercises for lesson 06: the losses of Net.

Grade them with:  python lessons/06_net_forward_backward.py --exercises
"""
import numpy as np


def mse_backward(a, target):
    """d/da of mean((a - target)^2), the content loss's backward (same shape as a)."""
    return 2 * (a - target) / a.size


def _mean_std(x, eps=1e-5):
    flat = x.reshape(*x.shape[:2], -1)
    return flat.mean(axis=2), np.sqrt(flat.var(axis=2, ddof=1) + eps)


def style_loss(g_feats, s_feats):
    """pytorch-AdaIN's style loss: sum over layers of mse(mean_g, mean_s) + mse(std_g, std_s).

    g_feats, s_feats: lists of (N, C_i, H_i, W_i) features (the decoded image's and the
    style's, layer by layer; sizes may differ within a layer). Returns a float.
    """
    loss = 0.0
    for g, s in zip(g_feats, s_feats):
        (gm, gs), (sm, ss) = _mean_std(g), _mean_std(s)
        loss += np.mean((gm - sm) ** 2) + np.mean((gs - ss) ** 2)
    return float(loss)
