"""Exercises for lesson 08: reductions, Welford, and a kernel of your own.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/08_cuda_instance_stats.py --exercises
"""
import numpy as np  # noqa: F401  (you will want it)


def welford_merge(a, b):
    """Merge two partial results (count, mean, M2) into the one of all values together.

    M2 is the sum of squared deviations from the mean. Either side may be empty
    (count 0). Returns (count, mean, M2).
    """
    raise NotImplementedError("exercise: write this function")


def warp_butterfly_sum(values):
    """What each of 32 lanes holds after the xor butterfly  v += shfl_xor(v, offset),
    offset = 16, 8, 4, 2, 1, written with NumPy on a (32,) array. Return (32,).
    """
    raise NotImplementedError("exercise: write this function")


def sum_of_squares_kernel():
    """Return CUDA source for a kernel with instance_mean_std_v2's signature:

        extern "C" __global__ void instance_mean_std_sumsq(const float* x, float* mean,
                                                           float* std, int NC, int L, float eps)

    launched with one 256-thread block per plane (grid NC). It must use ONE pass over
    the data: each thread sums x and x*x (in float32), the block reduces both sums
    (shared memory), and thread 0 writes mean = s/L and std = sqrt((s2 - s*s/L)/(L-1) + eps).
    The grader runs it on the emulator, then on data with a large mean next to Welford.
    """
    raise NotImplementedError("exercise: write this function")
