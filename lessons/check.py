"""The exercises' grader: runs a lesson's checks against the learner's code.

    python -m lessons.check 05                       # grade lessons/exercises/05_*.py
    python lessons/05_backprop_by_hand.py --exercises # the same, from the lesson
    python -m lessons.check all --solutions           # grade the model solutions instead

Each exercise is a function in ``lessons/exercises/NN_name.py`` that starts out raising
NotImplementedError; its docstring says the task. The grader calls it on fresh inputs,
compares the answer with a reference that does not come from the learner's code
(a library function the lessons have checked against torch, a NumPy formula, or finite
differences), and prints one line per exercise:

    exercise 05.1 mean_std_backward: max error 3.1e-11 (tolerance 1e-06) pass
    exercise 05.2 adain_style_backward: not written yet (NotImplementedError)
      hint: ...

The exit code is 0 when every exercise of the chosen lessons passes, 1 otherwise.
``--solutions`` (or ADAIN_NP_EXERCISES=solutions, or a folder path in that variable)
grades another folder of the same files: the tests use it to check that every model
solution passes.
"""
import glob
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Callable

LESSONS_DIR = os.path.dirname(os.path.abspath(__file__))
if LESSONS_DIR not in sys.path:
    sys.path.insert(0, LESSONS_DIR)
import _common  # noqa: E402  (puts the repository on sys.path for a bare clone)
from _common import REPO_ROOT  # noqa: E402

import numpy as np  # noqa: E402

from adain_np.gradient_check import max_relative_error, numerical_gradient  # noqa: E402

FOLDERS = {"exercises": os.path.join(LESSONS_DIR, "exercises"),
           "solutions": os.path.join(LESSONS_DIR, "solutions")}
ENV_VARIABLE = "ADAIN_NP_EXERCISES"

# Finite differences in float64 with h = 1e-5: ~1e-9 relative on these smooth functions
# (lesson 05); a wrong formula is off by 1e-2 or more.
FD_TOL = 1e-6
# Exact rearrangements in float64 (same sums, another order): ~1e-15 of the values.
F64_TOL = 1e-10


@dataclass
class Exercise:
    function: str                  # the name the learner's module defines
    grade: Callable                # grade(fn) -> error (a float; below tolerance passes)
    tolerance: float
    hint: str


def _max_abs(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape}, expected {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _rel(a, b):
    return _max_abs(a, b) / max(float(np.max(np.abs(np.asarray(b, dtype=np.float64)))), 1e-300)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------- 01

def _grade_c_strides(fn):
    wrong = 0
    for shape, dtype in (((2, 3, 4, 5), np.float32), ((1, 64, 7, 9), np.float64), ((5,), np.int16),
                         ((3, 1, 2), np.uint8)):
        wrong += tuple(fn(shape, np.dtype(dtype).itemsize)) != np.empty(shape, dtype).strides
    return float(wrong)


def _grade_reflection_pad(fn):
    x = _rng().standard_normal((2, 3, 5, 6))
    return max(_max_abs(fn(x, p), np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect"))
               for p in (1, 2))


def _grade_reflection_pad_backward(fn):
    # The adjoint identity: <pad(x), g> = <x, pad_backward(g)> for every x, g.
    rng = _rng(1)
    x = rng.standard_normal((2, 2, 5, 4))
    errors = []
    for p in (1, 2):
        g = rng.standard_normal((2, 2, 5 + 2 * p, 4 + 2 * p))
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
        dx = np.asarray(fn(g, p))
        if dx.shape != x.shape:
            raise ValueError(f"shape {dx.shape}, expected {x.shape}")
        # Every entry of dx at once: the adjoint for each unit vector x = e_i.
        reference = numerical_gradient(
            lambda v: np.pad(v, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect"), x.copy(), g)
        errors.append(_max_abs(dx, reference))
        errors.append(abs(np.sum(padded * g) - np.sum(x * dx)))
    return max(errors)


# ------------------------------------------------------------------------------- 02

def _reference_im2col(x_n, k):
    windows = np.lib.stride_tricks.sliding_window_view(x_n, (k, k), axis=(1, 2))  # (C, Ho, Wo, k, k)
    C, Ho, Wo = windows.shape[:3]
    return windows.transpose(0, 3, 4, 1, 2).reshape(C * k * k, Ho * Wo)


def _grade_im2col(fn):
    rng = _rng(2)
    errors = []
    for C, H, W, k in ((1, 4, 4, 3), (3, 6, 5, 3), (2, 5, 7, 2)):
        x = rng.standard_normal((C, H, W))
        errors.append(_max_abs(fn(x, k), _reference_im2col(x, k)))
    return max(errors)


def _grade_conv_im2col(fn):
    from adain_np.conv import conv2d_valid
    rng = _rng(3)
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    return _rel(fn(x, w, b), conv2d_valid(x, w, b))


def _grade_im2col_bytes(fn):
    wrong = 0
    for C, H, W, k, itemsize in ((3, 8, 9, 3, 4), (64, 32, 32, 3, 4), (5, 5, 5, 1, 8)):
        wrong += int(fn(C, H, W, k, itemsize)) != _reference_im2col(
            np.zeros((C, H, W), dtype=f"f{itemsize}"), k).nbytes
    return float(wrong)


# ------------------------------------------------------------------------------- 03

def _grade_maxpool_floor(fn):
    rng = _rng(4)
    errors = []
    for H, W in ((4, 6), (5, 5), (7, 4), (3, 3)):
        x = rng.standard_normal((2, 3, H, W))
        Ho, Wo = H // 2, W // 2
        ref = x[:, :, :2 * Ho, :2 * Wo].reshape(2, 3, Ho, 2, Wo, 2).max(axis=(3, 5))
        errors.append(_max_abs(fn(x), ref))
    return max(errors)


def _grade_pool_output_size(fn):
    from adain_np.layers import maxpool2d_forward
    wrong = 0
    for n in range(1, 12):
        ceil_side = maxpool2d_forward(np.zeros((1, 1, n, 1)))[0].shape[2]
        floor_side = np.zeros((n // 2 * 2, 1))[::2].shape[0]          # the windows that fit
        wrong += int(fn(n, ceil_mode=True)) != ceil_side
        wrong += int(fn(n, ceil_mode=False)) != floor_side
    return float(wrong)


def _grade_upsample_backward(fn):
    from adain_np.layers import upsample_nearest2d_forward
    x = _rng(5).standard_normal((2, 3, 3, 4))
    dout = _rng(6).standard_normal((2, 3, 6, 8))
    reference = numerical_gradient(lambda v: upsample_nearest2d_forward(v)[0], x.copy(), dout)
    return _max_abs(fn(dout), reference)


# ------------------------------------------------------------------------------- 04

def _grade_instance_mean_std(fn):
    x = _rng(7).standard_normal((2, 5, 4, 6)) * 3 + 1
    x[0, 0] = 0.25                                                   # a flat channel: std = sqrt(eps)
    flat = x.reshape(2, 5, -1)
    mean = flat.mean(axis=2)[..., None, None]
    std = np.sqrt(flat.var(axis=2, ddof=1) + 1e-5)[..., None, None]
    m, s = fn(x, 1e-5)
    return max(_max_abs(m, mean), _max_abs(s, std))


def _grade_adain(fn):
    from adain_np.stats import adain_forward
    rng = _rng(8)
    c = rng.standard_normal((2, 4, 5, 6))
    s = rng.standard_normal((2, 4, 7, 3)) * 2 - 1
    return max(_rel(fn(c, s, alpha), adain_forward(c, s, alpha)[0]) for alpha in (1.0, 0.3))


# ------------------------------------------------------------------------------- 05

def _mean_std(x, eps=1e-5):
    flat = x.reshape(*x.shape[:2], -1)
    L = flat.shape[2]
    mean = flat.mean(axis=2)[..., None, None]
    std = np.sqrt(((flat - flat.mean(axis=2, keepdims=True)) ** 2).sum(axis=2) / (L - 1) + eps)
    return mean, std[..., None, None]


def _grade_mean_std_backward(fn):
    rng = _rng(9)
    x = rng.standard_normal((2, 3, 4, 5)) * 2 + 1
    dmean, dstd = rng.standard_normal((2, 3, 1, 1)), rng.standard_normal((2, 3, 1, 1))
    mean, std = _mean_std(x)
    both = np.concatenate([dmean, dstd], axis=1)
    numeric = numerical_gradient(lambda v: np.concatenate(_mean_std(v), axis=1), x.copy(), both)
    return max_relative_error(fn(dmean, dstd, x, mean, std), numeric)


def _adain_np(c, s):
    mc, sc = _mean_std(c)
    ms, ss = _mean_std(s)
    return (c - mc) / sc * ss + ms


def _grade_adain_style_backward(fn):
    rng = _rng(10)
    c = rng.standard_normal((1, 3, 4, 5))
    s = rng.standard_normal((1, 3, 5, 3)) * 2 + 0.5
    dt = rng.standard_normal(c.shape)
    numeric = numerical_gradient(lambda v: _adain_np(c, v), s.copy(), dt)
    return max_relative_error(fn(dt, c, s), numeric)


def _grade_maxpool_backward_ties(fn):
    # Ties on purpose (integers in 0..2), odd sizes for the ceil-mode windows. Finite
    # differences can't judge a tie; torch routes to the first maximum in row-major order.
    x = _rng(11).integers(0, 3, size=(2, 2, 5, 7)).astype(np.float64)
    x[0, 0, 4, 6] = -5.0                                             # a window of one real pixel
    dout = _rng(12).standard_normal((2, 2, 3, 4))
    N, C, H, W = x.shape
    ref = np.zeros_like(x)
    for n, c, i, j in np.ndindex(dout.shape):
        best = None
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            y, z = 2 * i + dy, 2 * j + dx
            if y < H and z < W and (best is None or x[n, c, y, z] > x[n, c, best[0], best[1]]):
                best = (y, z)
        ref[n, c, best[0], best[1]] += dout[n, c, i, j]
    return _max_abs(fn(dout, x), ref)


# ------------------------------------------------------------------------------- 06

def _grade_mse_backward(fn):
    rng = _rng(13)
    a, t = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    numeric = numerical_gradient(lambda v: np.array(np.mean((v - t) ** 2)), a.copy(), 1.0)
    return max_relative_error(fn(a, t), numeric)


def _grade_style_loss(fn):
    rng = _rng(14)
    g = [rng.standard_normal((2, c, h, h)) for c, h in ((4, 8), (6, 4), (8, 2))]
    s = [rng.standard_normal((2, c, h + 1, h)) * 2 + 1 for c, h in ((4, 8), (6, 4), (8, 2))]
    ref = 0.0
    for gi, si in zip(g, s):
        (gm, gs), (sm, ss) = _mean_std(gi), _mean_std(si)
        ref += np.mean((gm - sm) ** 2) + np.mean((gs - ss) ** 2)
    return abs(float(fn(g, s)) - ref) / ref


# ------------------------------------------------------------------------------- 07

def _grade_adam_step(fn):
    # Against a transcription of torch.optim.Adam's documented update, written here.
    rng = _rng(15)
    p = rng.standard_normal(6)
    m, v = np.zeros(6), np.zeros(6)
    p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    errors = []
    for step in range(1, 5):
        g = rng.standard_normal(6)
        m_ref = b1 * m_ref + (1 - b1) * g
        v_ref = b2 * v_ref + (1 - b2) * g * g
        p_ref = p_ref - lr * (m_ref / (1 - b1 ** step)) / (np.sqrt(v_ref / (1 - b2 ** step)) + eps)
        p, m, v = fn(p.copy(), g, m.copy(), v.copy(), lr, step)
        errors.append(_rel(p, p_ref))
    return max(errors)


def _grade_learning_rate(fn):
    wrong = 0
    for lr, decay, it, expected in ((1e-4, 5e-5, 0, 1e-4), (1e-4, 5e-5, 20000, 5e-5),
                                    (1e-3, 1e-3, 1000, 5e-4), (2e-4, 0.0, 999, 2e-4)):
        wrong += abs(fn(lr, decay, it) - expected) > 1e-12 * expected
    return float(wrong)


# ------------------------------------------------------------------------------- 08

def _grade_welford_merge(fn):
    rng = _rng(16)
    errors = []
    for na, nb in ((5, 7), (1, 30), (100, 3), (0, 4)):
        a = rng.standard_normal(na) * 3 + 2
        b = rng.standard_normal(nb) * 3 + 2
        def state(v):
            return (len(v), float(v.mean()) if len(v) else 0.0,
                    float(np.sum((v - v.mean()) ** 2)) if len(v) else 0.0)
        count, mean, m2 = fn(state(a), state(b))
        ab = np.concatenate([a, b])
        errors += [abs(count - len(ab)), abs(mean - ab.mean()),
                   abs(m2 - np.sum((ab - ab.mean()) ** 2)) / np.sum((ab - ab.mean()) ** 2)]
    return max(errors)


def _grade_warp_butterfly_sum(fn):
    values = _rng(17).standard_normal(32)
    lanes = np.asarray(fn(values), dtype=np.float64)
    if lanes.shape != (32,):
        raise ValueError(f"shape {lanes.shape}, expected (32,)")
    return _rel(lanes, np.full(32, values.sum()))


def _emulator():
    from adain_np.cuda import emulator  # imported on use: only exercise 08.3 needs g++
    return emulator


def run_stats_kernel(source, name, planes, eps=1e-5):
    """Launch a (x, mean, std, NC, L, eps) kernel, one 256-thread block per plane, on the emulator."""
    planes = np.ascontiguousarray(planes, dtype=np.float32)          # (NC, L)
    NC, L = planes.shape
    kernel = _emulator().RawKernel(source, name, filename=f"{name}.cu")
    mean, std = np.empty(NC, np.float32), np.empty(NC, np.float32)
    kernel((NC,), (256,), (planes, mean, std, np.int32(NC), np.int32(L), np.float32(eps)))
    return mean, std


def _grade_sum_of_squares_kernel(fn):
    source = fn()
    planes = _rng(18).standard_normal((3, 1000)).astype(np.float32) * 2 + 0.5
    mean, std = run_stats_kernel(source, "instance_mean_std_sumsq", planes)
    ref = planes.astype(np.float64)
    ref_mean, ref_std = ref.mean(axis=1), np.sqrt(ref.var(axis=1, ddof=1) + 1e-5)
    error = max(_rel(mean, ref_mean), _rel(std, ref_std))
    if error < 1e-4:
        # It works on friendly data. Now the data lesson 08 warns about: a large mean, a
        # small spread, as after a ReLU. Beside it the Welford kernel of kernels/.
        from adain_np.cuda.source import kernel_source
        shifted = (1000 + 0.1 * _rng(19).standard_normal((3, 4096))).astype(np.float32)
        true_std = np.sqrt(shifted.astype(np.float64).var(axis=1, ddof=1) + 1e-5)
        _, s_sumsq = run_stats_kernel(source, "instance_mean_std_sumsq", shifted)
        _, s_welford = run_stats_kernel(kernel_source("instance_stats.cu"), "instance_mean_std_v2",
                                        shifted)
        sumsq_error = _rel(s_sumsq, true_std)
        why = (" (NaN: s2 - s*s/L came out negative, and its sqrt is NaN)"
               if not np.isfinite(sumsq_error) else "")
        print(f"    on data with mean 1000 and std 0.1 the std is off by {sumsq_error:.1e} (relative) with "
              f"your one-pass sums{why}, by {_rel(s_welford, true_std):.1e} with Welford (kernels/ v2)")
    return error


# ------------------------------------------------------------------------------- 09

def _grade_loads_per_fma(fn):
    # Per K step a BM x BN tile loads BM + BN values and does BM * BN multiply-adds.
    wrong = 0
    for (bm, bn), expected in (((1, 1), 2.0), ((16, 16), 0.125), ((64, 64), 0.03125),
                               ((128, 128), 0.015625), ((8, 128), 136 / 1024)):
        wrong += abs(fn(bm, bn) - expected) > 1e-12
    return float(wrong)


def _grade_tile_useful_fraction(fn):
    import math
    wrong = 0
    for M, N, bm, bn in ((3, 8 * 256 * 256, 128, 128), (64, 8192, 64, 64), (256, 8 * 32 * 32, 128, 128),
                         (20, 99, 16, 16), (1, 1, 16, 16)):
        blocks = math.ceil(M / bm) * math.ceil(N / bn)
        wrong += abs(fn(M, N, bm, bn) - M * N / (blocks * bm * bn)) > 1e-12
    return float(wrong)


# ------------------------------------------------------------------------------- 10

def _grade_coral_pixels(fn):
    from adain_np.coral import coral
    rng = _rng(20)
    source = rng.random((3, 12, 10)) * np.array([1.0, 0.5, 0.2])[:, None, None]
    target = rng.random((3, 9, 11))
    target[1] = 0.5 * target[0] + 0.5 * target[1]                    # correlated channels
    return _rel(fn(source, target), coral(source, target))


def _grade_interpolate_styles(fn):
    from adain_np.stats import adain_forward
    rng = _rng(21)
    c = rng.standard_normal((1, 4, 6, 5))
    styles = [rng.standard_normal((1, 4, 5, 7)) * k + k for k in (0.5, 2.0, 4.0)]
    weights = [0.2, 0.5, 0.3]
    ref = sum(wi * adain_forward(c, s)[0] for wi, s in zip(weights, styles))
    return _rel(fn(c, styles, weights), ref)


EXERCISES = {
    "01": [Exercise("c_strides", _grade_c_strides, 0.5,
                    "the last axis moves by itemsize bytes; each axis before it by the size of all axes after it"),
           Exercise("reflection_pad", _grade_reflection_pad, F64_TOL,
                    "reflection does not repeat the edge: padded row -1 is row 1, not row 0"),
           Exercise("reflection_pad_backward", _grade_reflection_pad_backward, 1e-8,
                    "start from dout's centre, then ADD each padded row/column to its source; do rows "
                    "first and columns of the result next so corners reach their source twice")],
    "02": [Exercise("im2col", _grade_im2col, F64_TOL,
                    "row (c, ky, kx) of column (i, j) holds x[c, i+ky, j+kx]; columns run over i then j"),
           Exercise("conv_im2col", _grade_conv_im2col, F64_TOL,
                    "y[n] = w.reshape(F, -1) @ im2col(x[n], k) + b[:, None], reshaped to (F, Ho, Wo)"),
           Exercise("im2col_bytes", _grade_im2col_bytes, 0.5,
                    "C*k*k rows times (H-k+1)*(W-k+1) columns, times the item size")],
    "03": [Exercise("maxpool_floor", _grade_maxpool_floor, F64_TOL,
                    "floor mode drops the last row/column of an odd side: crop to 2*(H//2) x 2*(W//2), "
                    "then reshape to (N, C, Ho, 2, Wo, 2) and take the max over the 2s"),
           Exercise("pool_output_size", _grade_pool_output_size, 0.5,
                    "floor: the windows that fit, n // 2; ceil: one more when n is odd, (n + 1) // 2"),
           Exercise("upsample_backward", _grade_upsample_backward, FD_TOL,
                    "each input pixel was copied to a 2x2 block: sum the four strided views of dout")],
    "04": [Exercise("instance_mean_std", _grade_instance_mean_std, F64_TOL,
                    "over H*W per (n, c); the variance divides by L - 1 (unbiased), eps goes inside the sqrt"),
           Exercise("adain", _grade_adain, F64_TOL,
                    "std_s * (c - mean_c) / std_c + mean_s, then alpha * that + (1 - alpha) * c")],
    "05": [Exercise("mean_std_backward", _grade_mean_std_backward, FD_TOL,
                    "dx = dmean / L + dstd * (x - mean) / ((L - 1) * std): the variance divides by L - 1"),
           Exercise("adain_style_backward", _grade_adain_style_backward, FD_TOL,
                    "the style enters only through mean_s and std_s: dmean_s = sum(dt), "
                    "dstd_s = sum(dt * normalized), then the mean/std backward of exercise 1"),
           Exercise("maxpool_backward_ties", _grade_maxpool_backward_ties, F64_TOL,
                    "with ties only the FIRST maximum in (top-left, top-right, bottom-left, bottom-right) "
                    "order gets the gradient (a strict >); pad odd sides with -inf, not 0")],
    "06": [Exercise("mse_backward", _grade_mse_backward, FD_TOL,
                    "d mean((a - t)^2) / da = 2 (a - t) / a.size: the mean divides by EVERY element"),
           Exercise("style_loss", _grade_style_loss, 1e-12,
                    "per layer: mse(mean_g, mean_s) + mse(std_g, std_s) with lesson 04's statistics; "
                    "sum the layers (no weights)")],
    "07": [Exercise("adam_step", _grade_adam_step, 1e-12,
                    "m, v are running averages of g and g^2; divide m by 1 - b1^step and v by 1 - b2^step "
                    "BEFORE the sqrt; eps is added after it"),
           Exercise("learning_rate", _grade_learning_rate, 0.5,
                    "pytorch-AdaIN's adjust_learning_rate: lr / (1 + lr_decay * iteration)")],
    "08": [Exercise("welford_merge", _grade_welford_merge, 1e-9,
                    "n = na + nb; delta = mean_b - mean_a; mean = mean_a + delta * nb / n; "
                    "M2 = M2_a + M2_b + delta^2 * na * nb / n (and an empty side changes nothing)"),
           Exercise("warp_butterfly_sum", _grade_warp_butterfly_sum, 1e-12,
                    "for offset in 16, 8, 4, 2, 1: v = v + v[lanes ^ offset] (all lanes at once)"),
           Exercise("sum_of_squares_kernel", _grade_sum_of_squares_kernel, 1e-4,
                    "each thread sums x and x*x over i = t, t + blockDim.x, ...; reduce both in shared "
                    "memory with a __syncthreads() between the steps; var = (sum2 - sum*sum/L) / (L - 1)")],
    "09": [Exercise("loads_per_fma", _grade_loads_per_fma, 0.5,
                    "per K step the tile loads BM values of A and BN of B and does BM * BN multiply-adds"),
           Exercise("tile_useful_fraction", _grade_tile_useful_fraction, 0.5,
                    "blocks = ceil(M / BM) * ceil(N / BN); useful = M * N / (blocks * BM * BN)")],
    "10": [Exercise("coral_pixels", _grade_coral_pixels, 1e-5,
                    "standardise each channel (unbiased std), covariance X X^T + I (not divided by L), "
                    "out = sqrt(C_t) inv(sqrt(C_s)) x_s_norm * std_t + mean_t; matrix sqrt by SVD"),
           Exercise("interpolate_styles", _grade_interpolate_styles, 1e-9,
                    "sum over i of w_i * AdaIN(content, style_i), AdaIN as in lesson 04")],
}


def exercise_folder(solutions=False):
    """The folder graded: exercises/ by default; solutions/ or another via the flag or variable."""
    if solutions:
        return FOLDERS["solutions"]
    chosen = os.environ.get(ENV_VARIABLE, "").strip()
    if not chosen:
        return FOLDERS["exercises"]
    return FOLDERS.get(chosen, chosen)


def load_module(lesson, folder):
    """Import folder/NN_*.py under a private name (its file name starts with a digit)."""
    paths = sorted(glob.glob(os.path.join(folder, f"{lesson}_*.py")))
    if len(paths) != 1:
        raise _common.UserError(f"expected one file {lesson}_*.py in {folder}, found {len(paths)}")
    spec = importlib.util.spec_from_file_location(f"_exercises_{lesson}", paths[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grade(lesson, folder=None):
    """Grade one lesson's exercises; print a line each; return the number that failed."""
    folder = folder or exercise_folder()
    module = load_module(lesson, folder)
    print(f"grading {os.path.relpath(module.__file__, REPO_ROOT)}")
    failed = 0
    for number, exercise in enumerate(EXERCISES[lesson], start=1):
        label = f"exercise {lesson}.{number} {exercise.function}"
        fn = getattr(module, exercise.function, None)
        try:
            if fn is None:
                raise AttributeError(f"no function {exercise.function} in the file")
            error = float(exercise.grade(fn))
        except NotImplementedError:
            print(f"{label}: not written yet (NotImplementedError) FAIL")
            ok = False
        except Exception as err:  # the learner's code may raise anything: report it, go on
            message = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            print(f"{label}: raised {type(err).__name__}: {message} FAIL")
            ok = False
        else:
            ok = bool(np.isfinite(error) and error < exercise.tolerance)
            print(f"{label}: max error {error:.1e} (tolerance {exercise.tolerance:.0e}) "
                  f"{'pass' if ok else 'FAIL'}")
        if not ok:
            failed += 1
            print(f"  hint: {exercise.hint}")
    return failed


def main(argv=None):
    parser = _common._Parser(description="Grade the lessons' exercises.")
    parser.add_argument("lesson", help="a lesson number (01..10) or 'all'")
    parser.add_argument("--solutions", action="store_true",
                        help=f"grade lessons/solutions/ (also: {ENV_VARIABLE}=solutions or a folder)")
    args = parser.parse_args(argv)
    lessons = sorted(EXERCISES) if args.lesson == "all" else [args.lesson.zfill(2)]
    unknown = [n for n in lessons if n not in EXERCISES]
    if unknown:
        raise _common.UserError(f"no exercises for lesson {args.lesson!r} (choose 01..10 or all)")
    folder = exercise_folder(args.solutions)
    failed = sum(grade(n, folder) for n in lessons)
    total = sum(len(EXERCISES[n]) for n in lessons)
    print(f"exercises: {total - failed} of {total} pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_common.run_cli(main))
