"""Exercises for lesson 03: floor-mode pooling, the shape rule, upsampling's backward.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/03_pool_upsample_shapes.py --exercises
"""


def maxpool_floor(x):
    """2x2 max-pool, stride 2, in FLOOR mode (torch's default, ceil_mode=False).

    x: (N, C, H, W) -> (N, C, H // 2, W // 2): an odd last row/column is dropped.
    """
    raise NotImplementedError("exercise: write this function")


def pool_output_size(n, ceil_mode):
    """The output side of a 2x2, stride-2 max-pool over a side of n pixels.

    ceil_mode=True is what pytorch-AdaIN's encoder uses, False is torch's default.
    """
    raise NotImplementedError("exercise: write this function")


def upsample_backward(dout):
    """The backward of nearest x2 upsampling: dout (N, C, 2H, 2W) -> dx (N, C, H, W)."""
    raise NotImplementedError("exercise: write this function")
