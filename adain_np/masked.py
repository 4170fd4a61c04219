"""Spatial control with a mask: two styles, each on its own region of the content.

This is the original Lua AdaIN's ``-mask`` option. The mask is shrunk to the relu4_1
feature map of the content by nearest neighbour; non-zero pixels are the foreground
and take the first style, zero pixels the background and the second. Within each
region AdaIN runs on that region alone: the content mean and std are taken over the
region's positions only (unbiased std + eps, as calc_mean_std), the region is
normalised with them and given the style's mean and std (over the whole style
image). The alpha blend with the content features follows. A region with no
positions leaves its style unused.

Dimension names: C channels, h/w feature map size, L = h*w positions, n positions of a region.
"""
import numpy as np
from PIL import Image

from .images import center_crop, load_image
from .stats import EPS
from .xp import get_array_module


def load_mask(path):
    """A mask file as a grayscale ('L') PIL image; any mode Pillow reads. Raises ImageError."""
    return load_image(path).convert("L")


def mask_to_features(mask_img, feature_hw, crop=False):
    """(h, w) bool foreground map for a relu4_1 map of size feature_hw, by nearest neighbour.

    With crop=True the mask is first cut to the centred square of its shorter side,
    the part of the picture that --crop keeps of a content image of the same shape.
    """
    if crop:
        side = min(mask_img.size)
        mask_img = center_crop(mask_img, side)
    h, w = feature_hw
    small = mask_img.resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(small) > 0                                    # (h, w)


def region_mean_std(part, eps=EPS):
    """Mean and std over the n positions of a region: part (C, n) -> (C, 1) each.

    The std is calc_mean_std's (unbiased, + eps). A single position has no unbiased
    spread; its variance is taken as 0, so it is set to the style's mean.
    """
    xp = get_array_module(part)
    n = part.shape[1]
    mean = part.mean(axis=1, keepdims=True)                         # (C, 1)
    centered = part - mean                                          # (C, n)
    if n > 1:
        var = (centered * centered).sum(axis=1, keepdims=True) / (n - 1)
    else:
        var = xp.zeros_like(mean)
    return mean, (var + eps) ** 0.5


def masked_adain(content_feat, style_stats, mask, alpha=1.0, eps=EPS):
    """AdaIN with each style on its own region, then the alpha blend.

    content_feat: (1, C, h, w); style_stats: [(mean, std), (mean, std)] for the
    foreground and background styles, each (1, C, 1, 1); mask: (h, w) bool, True =
    foreground. Returns the target features (1, C, h, w), same array type as content_feat.
    """
    xp = get_array_module(content_feat)
    N, C, h, w = content_feat.shape
    if N != 1:
        raise ValueError(f"masked_adain takes one content image, got a batch of {N}")
    if tuple(mask.shape) != (h, w):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the features' {(h, w)}")
    if len(style_stats) != 2:
        raise ValueError(f"masked_adain needs exactly two styles, got {len(style_stats)}")
    flat = content_feat.reshape(C, h * w)                           # (C, L)
    foreground = xp.asarray(np.asarray(mask).reshape(-1))           # (L,) bool
    target = xp.empty_like(flat)                                    # (C, L)
    for region, (style_mean, style_std) in zip((foreground, ~foreground), style_stats):
        positions = xp.nonzero(region)[0]                           # (n,)
        if positions.size == 0:
            continue  # an empty region: this style is unused
        part = flat[:, positions]                                   # (C, n)
        mean, std = region_mean_std(part, eps)
        normalized = (part - mean) / std
        target[:, positions] = normalized * style_std.reshape(C, 1) + style_mean.reshape(C, 1)
    if alpha != 1.0:
        target = alpha * target + (1 - alpha) * flat
    return target.reshape(1, C, h, w)
