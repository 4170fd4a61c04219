"""Exercises for lesson 09: what a tile buys and what it wastes.

Grade them with:  python lessons/09_fast_conv_kernel.py --exercises
"""
import math


def loads_per_fma(bm, bn):
    """Global-memory loads per multiply-add of a block computing a bm x bn tile of Y = A @ B."""
    return (bm + bn) / (bm * bn)


def tile_useful_fraction(M, N, bm, bn):
    """The fraction of the outputs computed by bm x bn tiles covering an M x N matrix
    that lie inside the matrix (1.0 when the tiles fit exactly)."""
    blocks = math.ceil(M / bm) * math.ceil(N / bn)
    return M * N / (blocks * bm * bn)
