"""The hand-written Adam against torch.optim.Adam (defaults) on the same gradient sequences.

The learning rate is changed before every step as train.py's adjust_learning_rate does,
so the schedule, the bias corrections and the step count are all exercised.
"""
import numpy as np
import pytest
import torch

from adain_np.backend import NumpyBackend
from adain_np.optim import Adam
from adain_np.train import learning_rate

STEPS = 60
BASE_LR = 1e-2  # large, so that 60 steps move the parameters far (a wrong update shows)
LR_DECAY = 0.05  # large, so the rate changes by a visible amount every step


def gradient_sequence(shapes, steps, seed):
    """Gradients of very different scales, so that eps and the bias corrections matter."""
    rng = np.random.default_rng(seed)
    sequence = []
    for step in range(steps):
        grads = {}
        for name, shape in shapes.items():
            g = rng.standard_normal(shape)
            g[..., 0] *= 1e-9   # comparable to eps = 1e-8: the eps placement matters here
            g[..., 1] = 0.0     # zero gradients: m and v decay, the update is 0/(0+eps)
            if step % 7 == 3:
                g *= 100.0      # a burst, so v lags behind m
            grads[name] = g
        sequence.append(grads)
    return sequence


def run_torch(params, sequence, dtype):
    tensors = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
    optimizer = torch.optim.Adam(list(tensors.values()), lr=BASE_LR)
    for i, grads in enumerate(sequence):
        for group in optimizer.param_groups:  # train.py's adjust_learning_rate(optimizer, i)
            group["lr"] = BASE_LR / (1.0 + LR_DECAY * i)
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k], dtype=dtype)
        optimizer.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


def run_ours(params, sequence, dtype, backend):
    params = {k: v.astype(dtype) for k, v in params.items()}
    optimizer = Adam(params, lr=BASE_LR, backend=backend)
    for i, grads in enumerate(sequence):
        optimizer.lr = learning_rate(BASE_LR, LR_DECAY, i)
        optimizer.step({k: g.astype(dtype) for k, g in grads.items()})
    assert optimizer.step_count == len(sequence)
    return params


SHAPES = {"w": (8, 4, 3, 3), "b": (8, 5)}

# float64: both sides do the same few operations per element at 53 bits; after 60 steps
#   the differences are round-off, ~1e-16 relative. 1e-12 absolute is far below any real
#   error (a wrong bias correction or eps placement moves parameters by >1e-4 here).
# float32: torch uses lerp for m and a fused addcdiv, we use m*b1 + (1-b1)*g; each step
#   can round the parameter differently by ~1 ulp (6e-8 at |p| ~ 1), which can add up
#   over 60 steps: 60 * 2 ulp * max|p| (~3) is ~2e-5. 5e-5 leaves room and is still
#   >10x below the 1e-3-sized shifts a wrong formula gives at this learning rate.
TOLERANCE = {np.float64: 1e-12, np.float32: 5e-5}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_backend", [False, True])
def test_adam_matches_torch_with_train_py_schedule(dtype, with_backend):
    rng = np.random.default_rng(1)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    sequence = gradient_sequence(SHAPES, STEPS, seed=2)
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    expected = run_torch(params, sequence, torch_dtype)
    backend = NumpyBackend(dtype) if with_backend else None
    ours = run_ours(params, sequence, dtype, backend)
    for k in SHAPES:
        assert ours[k].dtype == dtype
        moved = np.max(np.abs(expected[k] - params[k]))
        assert moved > 0.05, "the parameters barely moved: the test would not see errors"
        error = np.max(np.abs(ours[k] - expected[k]))
        assert error <= TOLERANCE[dtype], f"{k}: max abs difference {error:.2e}"


def test_adam_resumed_from_saved_state_continues_identically():
    """Splitting a run and restoring m, v and the step count changes nothing (bit for bit)."""
    rng = np.random.default_rng(3)
    start = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    sequence = gradient_sequence(SHAPES, 20, seed=4)
    straight = run_ours(start, sequence, np.float32, None)

    first = {k: v.copy() for k, v in start.items()}
    optimizer = Adam(first, lr=BASE_LR)
    for i, grads in enumerate(sequence[:9]):
        optimizer.lr = learning_rate(BASE_LR, LR_DECAY, i)
        optimizer.step({k: g.astype(np.float32) for k, g in grads.items()})
    saved = ({k: v.copy() for k, v in first.items()}, {k: v.copy() for k, v in optimizer.m.items()},
             {k: v.copy() for k, v in optimizer.v.items()}, optimizer.step_count)

    params, m, v, step = saved
    resumed = Adam(params, lr=BASE_LR)
    resumed.m, resumed.v, resumed.step_count = m, v, step
    for i, grads in enumerate(sequence[9:], start=9):
        resumed.lr = learning_rate(BASE_LR, LR_DECAY, i)
        resumed.step({k: g.astype(np.float32) for k, g in grads.items()})
    for k in SHAPES:
        np.testing.assert_array_equal(params[k], straight[k])


def test_learning_rate_is_train_py_schedule():
    # lr / (1 + lr_decay * i), i counting from 0 (the first step uses the full rate)
    assert learning_rate(1e-4, 5e-5, 0) == 1e-4
    assert learning_rate(1e-4, 5e-5, 10000) == pytest.approx(1e-4 / 1.5, rel=1e-15)
    assert learning_rate(1e-4, 5e-5, 159999) == pytest.approx(1e-4 / 8.99995, rel=1e-15)
