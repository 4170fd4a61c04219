"""Colour preservation: pytorch-AdaIN's ``coral`` (function.py), on pixels, before encoding.

``coral(source, target)`` recolours `source` (the style image) so that its per-channel
mean and std and its channel covariance match `target` (the content image). The
arithmetic follows function.py step by step:
    standardise each channel (torch's unbiased std, no eps),
    covariance X·Xᵀ + I of the standardised pixels (not divided by the pixel count),
    matrix square roots by SVD,
    out = sqrt(C_t) · inv(sqrt(C_s)) · x_s_norm · std_t + mean_t.
It runs in float64 (torch runs it in float32; the difference is ~1e-6) and returns
float32. One deliberate difference: a channel with zero spread (a flat colour) is
left at zero after standardising instead of becoming NaN, as 0/0 does in torch.

Dimension names: C = 3 colour channels, H/W height/width, L = H*W pixels.
"""
import numpy as np


def _calc_feat_flatten_mean_std(feat):
    """function.py's helper: (3, H, W) -> flat (3, L), mean (3, 1), std (3, 1), unbiased std."""
    feat = np.asarray(feat, dtype=np.float64)
    if feat.ndim != 3 or feat.shape[0] != 3:
        raise ValueError(f"coral needs a (3, H, W) image, got shape {feat.shape}")
    flat = feat.reshape(3, -1)                                      # (3, L)
    if flat.shape[1] < 2:
        raise ValueError("coral needs an image of at least 2 pixels (unbiased std)")
    mean = flat.mean(axis=1, keepdims=True)                         # (3, 1)
    std = flat.std(axis=1, ddof=1, keepdims=True)                   # (3, 1)
    return flat, mean, std


def _mat_sqrt(x):
    """function.py's _mat_sqrt: U·diag(sqrt(D))·Vᵀ from the SVD x = U·diag(D)·Vᵀ."""
    u, d, vt = np.linalg.svd(x)     # numpy's third factor is torch.svd's V already transposed
    return (u * np.sqrt(d)) @ vt


def _standardized_cov(feat):
    """(standardised pixels (3, L), mean (3, 1), std (3, 1), X·Xᵀ + I (3, 3))."""
    flat, mean, std = _calc_feat_flatten_mean_std(feat)
    safe_std = np.where(std > 0, std, 1.0)  # flat channel: 0 after centring, keep it 0
    norm = (flat - mean) / safe_std                                 # (3, L)
    return norm, mean, std, norm @ norm.T + np.eye(3)


def coral_transfer(source_cov_eye, target_cov_eye):
    """The (3, 3) colour map of coral: sqrt(target cov + I) @ inv(sqrt(source cov + I))."""
    return _mat_sqrt(target_cov_eye) @ np.linalg.inv(_mat_sqrt(source_cov_eye))


def coral(source, target):
    """function.py's coral: `source` (3, H, W) recoloured to `target` (3, H', W'); float32 (3, H, W)."""
    source = np.asarray(source)
    source_norm, _, _, source_cov_eye = _standardized_cov(source)  # (3, L_s), (3, 3)
    _, target_mean, target_std, target_cov_eye = _standardized_cov(target)
    transfer = coral_transfer(source_cov_eye, target_cov_eye)      # (3, 3)
    recoloured = (transfer @ source_norm) * target_std + target_mean  # (3, L_s)
    return recoloured.reshape(source.shape).astype(np.float32)
