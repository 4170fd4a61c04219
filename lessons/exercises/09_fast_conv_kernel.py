"""Exercises for lesson 09: what a tile buys and what it wastes.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/09_fast_conv_kernel.py --exercises
"""
import math  # noqa: F401  (you will want it)


def loads_per_fma(bm, bn):
    """Global-memory loads per multiply-add of a block computing a bm x bn tile of Y = A @ B."""
    raise NotImplementedError("exercise: write this function")


def tile_useful_fraction(M, N, bm, bn):
    """The fraction of the outputs computed by bm x bn tiles covering an M x N matrix
    that lie inside the matrix (1.0 when the tiles fit exactly)."""
    raise NotImplementedError("exercise: write this function")
