"""Exercises for lesson 04: instance statistics and AdaIN.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/04_instance_stats_and_adain.py --exercises
"""
import numpy as np  # noqa: F401  (you will want it)


def instance_mean_std(x, eps):
    """pytorch-AdaIN's calc_mean_std: per (n, c) plane of x (N, C, H, W).

    Returns (mean, std), each (N, C, 1, 1); std = sqrt(unbiased variance + eps).
    """
    raise NotImplementedError("exercise: write this function")


def adain(content, style, alpha):
    """alpha * AdaIN(content, style) + (1 - alpha) * content, eps = 1e-5.

    content (N, C, H, W), style (N, C, Hs, Ws) -> (N, C, H, W).
    """
    raise NotImplementedError("exercise: write this function")
