"""Exercises for lesson 03: floor-mode pooling, the shape rule, upsampling's backward.

Grade them with:  python lessons/03_pool_upsample_shapes.py --exercises
"""


def maxpool_floor(x):
    """2x2 max-pool, stride 2, in FLOOR mode (torch's default, ceil_mode=False).

    x: (N, C, H, W) -> (N, C, H // 2, W // 2): an odd last row/column is dropped.
    """
    N, C, H, W = x.shape
    Ho, Wo = H // 2, W // 2
    return x[:, :, :2 * Ho, :2 * Wo].reshape(N, C, Ho, 2, Wo, 2).max(axis=(3, 5))


def pool_output_size(n, ceil_mode):
    """The output side of a 2x2, stride-2 max-pool over a side of n pixels.

    ceil_mode=True is what pytorch-AdaIN's encoder uses, False is torch's default.
    """
    return (n + 1) // 2 if ceil_mode else n // 2


def upsample_backward(dout):
    """The backward of nearest x2 upsampling: dout (N, C, 2H, 2W) -> dx (N, C, H, W)."""
    return dout[:, :, 0::2, 0::2] + dout[:, :, 0::2, 1::2] + dout[:, :, 1::2, 0::2] + dout[:, :, 1::2, 1::2]
