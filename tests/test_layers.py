"""Every layer op against torch autograd, and against centred differences in float64."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adain_np import conv, layers
from helpers import check_against_torch, gradcheck

# Awkward shapes: odd, non-square, and one with a side of 2 (the smallest reflect-padable).
SHAPES = [(2, 5, 9, 7), (1, 3, 17, 23), (2, 4, 2, 3)]
rng = np.random.default_rng(1234)


def fresh(shape):
    return rng.standard_normal(shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pad", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reflection_pad_vs_torch(shape, pad, dtype):
    if pad >= min(shape[2:]):
        with pytest.raises(ValueError):
            layers.reflection_pad2d_forward(fresh(shape), pad)
        return
    check_against_torch(lambda x: layers.reflection_pad2d_forward(x, pad),
                        layers.reflection_pad2d_backward,
                        lambda x: F.pad(x, (pad,) * 4, mode="reflect"), [fresh(shape)], dtype)


# A valid 3x3 conv needs at least a 3x3 input, so (2, 4, 2, 3) only meets the 1x1.
@pytest.mark.parametrize("shape,k", [(s, k) for s in SHAPES for k in (1, 3) if min(s[2:]) >= k])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_vs_torch(shape, k, dtype):
    w, b = fresh((7, shape[1], k, k)), fresh(7)
    check_against_torch(conv.conv2d_forward, conv.conv2d_backward, F.conv2d,
                        [fresh(shape), w, b], dtype)


def test_conv2d_blocked_equals_unblocked(monkeypatch):
    # Force many small row blocks (1 row each) so the block seams are exercised.
    x, w, b = fresh((2, 6, 11, 9)), fresh((5, 6, 3, 3)), fresh(5)
    whole, _ = conv.conv2d_forward(x, w, b)
    dy = fresh(whole.shape)
    dx0, dw0, db0 = conv.conv2d_backward(dy, (x, w))
    monkeypatch.setattr(conv, "BLOCK_BYTES", 1)
    conv.release_workspaces()
    blocked, _ = conv.conv2d_forward(x, w, b)
    dx1, dw1, db1 = conv.conv2d_backward(dy, (x, w))
    for a, ref in [(blocked, whole), (dx1, dx0), (dw1, dw0), (db1, db0)]:
        np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_vs_torch(shape, dtype):
    check_against_torch(layers.relu_forward, layers.relu_backward, torch.relu, [fresh(shape)], dtype)


@pytest.mark.parametrize("shape", SHAPES + [(1, 2, 1, 1), (1, 1, 5, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_ceil_mode_vs_torch(shape, dtype):
    def torch_pool(x):
        return F.max_pool2d(x, (2, 2), (2, 2), (0, 0), ceil_mode=True)
    check_against_torch(layers.maxpool2d_forward, layers.maxpool2d_backward, torch_pool,
                        [fresh(shape)], dtype)


def test_maxpool_ties_route_gradient_like_torch():
    # Post-ReLU maps are full of exact ties (zeros); torch sends the gradient to the
    # first maximum in row-major window order, and so must we.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 1, 1] = x[0, 0, 0, 1] = 2.0
    out, cache = layers.maxpool2d_forward(x)
    dout = np.arange(1, out.size + 1, dtype=np.float64).reshape(out.shape)
    xt = torch.tensor(x, requires_grad=True)
    F.max_pool2d(xt, 2, 2, 0, ceil_mode=True).backward(torch.tensor(dout))
    np.testing.assert_array_equal(layers.maxpool2d_backward(dout, cache), xt.grad.numpy())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsample_vs_torch(shape, dtype):
    check_against_torch(layers.upsample_nearest2d_forward, layers.upsample_nearest2d_backward,
                        lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
                        [fresh(shape)], dtype)


# --- finite differences (float64) ---------------------------------------------

def distinct(shape, spread=1.0):
    """Values spaced >= 1e-2 apart and away from 0, so no kink sits within h of them."""
    n = int(np.prod(shape))
    values = (rng.permutation(n) + 0.5 - n / 2) * (2 * spread / n + 1e-2)
    return values.reshape(shape)


def test_gradcheck_reflection_pad():
    gradcheck(lambda x: layers.reflection_pad2d_forward(x, 2), layers.reflection_pad2d_backward,
              [fresh((2, 2, 5, 4))])


@pytest.mark.parametrize("k", [1, 3])
def test_gradcheck_conv2d(k):
    gradcheck(conv.conv2d_forward, conv.conv2d_backward,
              [fresh((2, 3, 5, 4)), fresh((4, 3, k, k)), fresh(4)])


def test_gradcheck_relu():
    gradcheck(layers.relu_forward, layers.relu_backward, [distinct((2, 3, 4, 5))])


def test_gradcheck_maxpool():
    gradcheck(layers.maxpool2d_forward, layers.maxpool2d_backward, [distinct((2, 2, 5, 7))])


def test_gradcheck_upsample():
    gradcheck(layers.upsample_nearest2d_forward, layers.upsample_nearest2d_backward,
              [fresh((2, 2, 3, 4))])
