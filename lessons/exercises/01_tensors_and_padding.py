"""Exercises for lesson 01: tensors in memory and reflection padding.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/01_tensors_and_padding.py --exercises
"""
import numpy as np  # noqa: F401  (you will want it)


def c_strides(shape, itemsize):
    """The byte strides of a C-contiguous (row-major) array of this shape and item size.

    Return a tuple like numpy's ``arr.strides``, computed from the shape alone
    (no numpy array allowed): the last axis moves by one item.
    Example: c_strides((2, 3, 4), 4) == (48, 16, 4).
    """
    raise NotImplementedError("exercise: write this function")


def reflection_pad(x, p):
    """Reflection-pad the last two axes of x (N, C, H, W) by p, without np.pad.

    Returns (N, C, H + 2p, W + 2p), equal to torch's ReflectionPad2d(p) (p < H, p < W).
    """
    raise NotImplementedError("exercise: write this function")


def reflection_pad_backward(dout, p):
    """The backward of reflection_pad: dout (N, C, H + 2p, W + 2p) -> dx (N, C, H, W).

    Every padded value is a copy of an input value, so its gradient is ADDED to that
    input's (lesson 01's copy counts).
    """
    raise NotImplementedError("exercise: write this function")
