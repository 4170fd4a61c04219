"""Instance statistics and AdaIN, exactly as pytorch-AdaIN's function.py computes them.

Dimension names: N batch, C channels, H/W height/width, L = H*W positions.
"""
from .xp import get_array_module

# Added to the variance before the square root (function.py's calc_mean_std), so a
# constant channel does not divide by zero. Every mean/std in the project uses it.
EPS = 1e-5


def calc_mean_std_forward(feat, eps=EPS):
    # feat: (N, C, H, W) -> mean, std: (N, C, 1, 1). std uses the unbiased
    # variance (divide by L-1), as torch's Tensor.var does by default, plus eps.
    N, C = feat.shape[:2]
    flat = feat.reshape(N, C, -1)                                   # (N, C, L)
    L = flat.shape[2]
    mean = flat.mean(axis=2).reshape(N, C, 1, 1)                    # (N, C, 1, 1)
    centered = feat - mean                                          # (N, C, H, W)
    var = (centered * centered).reshape(N, C, -1).sum(axis=2) / (L - 1)
    std = (var.reshape(N, C, 1, 1) + eps) ** 0.5                    # (N, C, 1, 1)
    return (mean, std), (feat, mean, std)


def calc_mean_std_backward(dmean, dstd, cache):
    # dmean, dstd: (N, C, 1, 1) or None -> dfeat: (N, C, H, W)
    feat, mean, std = cache
    xp = get_array_module(feat)
    L = feat.shape[2] * feat.shape[3]
    dfeat = xp.zeros_like(feat)
    if dmean is not None:
        dfeat += dmean / L
    if dstd is not None:
        # d std / d var = 1 / (2 std);  d var / d x = 2 (x - mean) / (L - 1)
        dfeat += (dstd / (std * (L - 1))) * (feat - mean)
    return dfeat


def calc_mean_std(feat, eps=EPS):
    """pytorch-AdaIN's calc_mean_std: (mean, std), each (N, C, 1, 1)."""
    (mean, std), _ = calc_mean_std_forward(feat, eps)
    return mean, std


def adain_forward(content, style, alpha=1.0):
    """t = alpha * AdaIN(content, style) + (1 - alpha) * content, and a cache.

    content: (N, C, H, W), style: (N, C, Hs, Ws) -> t: (N, C, H, W)
    """
    (style_mean, style_std), style_cache = calc_mean_std_forward(style)
    t, cache = adain_with_stats_forward(content, style_mean, style_std, alpha)
    return t, (cache, style_cache)


def adain_backward(dt, cache):
    # dt: (N, C, H, W) -> dcontent (N, C, H, W), dstyle (N, C, Hs, Ws)
    cache, style_cache = cache
    dcontent, dstyle_mean, dstyle_std = adain_with_stats_backward(dt, cache)
    dstyle = calc_mean_std_backward(dstyle_mean, dstyle_std, style_cache)
    return dcontent, dstyle


def adain_with_stats_forward(content, style_mean, style_std, alpha=1.0):
    # content: (N, C, H, W); style_mean, style_std: (N, C, 1, 1) -> t: (N, C, H, W)
    (content_mean, content_std), content_cache = calc_mean_std_forward(content)
    normalized = (content - content_mean) / content_std             # (N, C, H, W)
    t = normalized * style_std + style_mean
    if alpha != 1.0:
        t = alpha * t + (1 - alpha) * content
    return t, (normalized, style_std, alpha, content_cache)


def adain_with_stats_backward(dt, cache):
    # dt: (N, C, H, W) -> dcontent (N, C, H, W), dstyle_mean, dstyle_std (N, C, 1, 1)
    normalized, style_std, alpha, content_cache = cache
    _, _, content_std = content_cache
    dadain = dt * alpha if alpha != 1.0 else dt
    dstyle_mean = dadain.sum(axis=(2, 3), keepdims=True)
    dstyle_std = (dadain * normalized).sum(axis=(2, 3), keepdims=True)
    dnormalized = dadain * style_std
    # normalized = (c - mean_c) / std_c: the direct path, then the paths through mean_c and std_c
    dcontent = dnormalized / content_std
    dcontent_mean = -dcontent.sum(axis=(2, 3), keepdims=True)
    dcontent_std = -(dnormalized * normalized).sum(axis=(2, 3), keepdims=True) / content_std
    dcontent += calc_mean_std_backward(dcontent_mean, dcontent_std, content_cache)
    if alpha != 1.0:
        dcontent += (1 - alpha) * dt
    return dcontent, dstyle_mean, dstyle_std


def adaptive_instance_normalization(content_feat, style_feat):
    """pytorch-AdaIN's adaptive_instance_normalization (no alpha blend)."""
    t, _ = adain_forward(content_feat, style_feat)
    return t
