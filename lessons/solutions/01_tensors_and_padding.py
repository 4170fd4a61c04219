"""Exercises for lesson 01: tensors in memory and reflection padding.

Grade them with:  python lessons/01_tensors_and_padding.py --exercises
"""
import numpy as np


def c_strides(shape, itemsize):
    """The byte strides of a C-contiguous (row-major) array of this shape and item size.

    Return a tuple like numpy's ``arr.strides``, computed from the shape alone
    (no numpy array allowed): the last axis moves by one item.
    Example: c_strides((2, 3, 4), 4) == (48, 16, 4).
    """
    strides = []
    step = itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def reflection_pad(x, p):
    """Reflection-pad the last two axes of x (N, C, H, W) by p, without np.pad.

    Returns (N, C, H + 2p, W + 2p), equal to torch's ReflectionPad2d(p) (p < H, p < W).
    """
    rows = np.concatenate([x[:, :, p:0:-1], x, x[:, :, -2:-p - 2:-1]], axis=2)
    return np.concatenate([rows[:, :, :, p:0:-1], rows, rows[:, :, :, -2:-p - 2:-1]], axis=3)


def reflection_pad_backward(dout, p):
    """The backward of reflection_pad: dout (N, C, H + 2p, W + 2p) -> dx (N, C, H, W).

    Every padded value is a copy of an input value, so its gradient is ADDED to that
    input's (lesson 01's copy counts).
    """
    d = dout.copy()
    H, W = d.shape[2] - 2 * p, d.shape[3] - 2 * p
    # Rows: padded row p - r (r = 1..p) copies input row r, padded row p + H - 1 + r copies H - 1 - r.
    for r in range(1, p + 1):
        d[:, :, p + r] += d[:, :, p - r]
        d[:, :, p + H - 1 - r] += d[:, :, p + H - 1 + r]
    d = d[:, :, p:p + H]
    for r in range(1, p + 1):
        d[:, :, :, p + r] += d[:, :, :, p - r]
        d[:, :, :, p + W - 1 - r] += d[:, :, :, p + W - 1 + r]
    return d[:, :, :, p:p + W]
