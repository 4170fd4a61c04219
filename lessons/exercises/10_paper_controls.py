"""Exercises for lesson 10: colour preservation and style interpolation.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/10_paper_controls.py --exercises
"""
import numpy as np  # noqa: F401  (you will want it)


def coral_pixels(source, target):
    """pytorch-AdaIN's coral: recolour source (3, H, W) to target's (3, H', W') colours.

    Standardise each channel of both (mean, unbiased std), take C = X X^T + I of the
    standardised pixels (3 x 3, NOT divided by the pixel count), and return
    sqrt(C_t) inv(sqrt(C_s)) x_s_norm * std_t + mean_t, reshaped to (3, H, W).
    Matrix square roots by SVD: U diag(sqrt(d)) V^T.
    """
    raise NotImplementedError("exercise: write this function")


def interpolate_styles(content, styles, weights):
    """test.py's style interpolation: sum over i of weights[i] * AdaIN(content, styles[i]).

    content (1, C, H, W), styles a list of (1, C, Hs, Ws), weights summing to 1.
    """
    raise NotImplementedError("exercise: write this function")
