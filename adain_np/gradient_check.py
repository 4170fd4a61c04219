"""Finite-difference gradient checks, as in cs231n's gradient_check.py.

Used by the tests and the lessons: run them in float64, with non-trivial inputs
(zeros hide bugs), and report the relative error |a - n| / (|a| + |n|).
"""
import numpy as np


def numerical_gradient(f, x, dout, h=1e-5):
    """d sum(f(x) * dout) / dx by centred differences, one element of x at a time.

    f maps the array x (changed in place and restored) to an array shaped like dout.
    The error of a centred difference is O(h^2) plus round-off ~eps/h.
    """
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = np.sum(f(x) * dout)
        x[i] = old - h
        minus = np.sum(f(x) * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def max_relative_error(analytic, numeric):
    """max over elements of |a - n| / (|a| + |n|), with 0/0 taken as 0."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    denom = np.abs(a) + np.abs(n)
    return float(np.max(np.where(denom > 0, np.abs(a - n) / np.maximum(denom, 1e-300), 0.0)))


def rel_error(a, b):
    """||a - b|| / ||b|| over the whole tensor (0 when both are 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom else float(np.linalg.norm(a))
