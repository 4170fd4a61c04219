"""calc_mean_std, AdaIN (both inputs, with the alpha blend) and the losses, against torch and
centred differences."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import adain_np
from adain_np import losses, stats
import torch_reference as ref
from helpers import check_against_torch, gradcheck, rel_error

rng = np.random.default_rng(99)
SHAPES = [(2, 5, 9, 7), (1, 3, 17, 23)]


def fresh(shape, scale=1.0, shift=0.0):
    return rng.standard_normal(shape) * scale + shift


def mean_std_pair_forward(feat):
    (mean, std), cache = stats.calc_mean_std_forward(feat)
    return np.concatenate([mean, std], axis=1), cache  # (N, 2C, 1, 1): one output to compare


def mean_std_pair_backward(dout, cache):
    C = dout.shape[1] // 2
    return stats.calc_mean_std_backward(dout[:, :C], dout[:, C:], cache)


def torch_mean_std_pair(feat):
    return torch.cat(ref.calc_mean_std(feat), dim=1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_calc_mean_std_vs_torch(shape, dtype):
    check_against_torch(mean_std_pair_forward, mean_std_pair_backward, torch_mean_std_pair,
                        [fresh(shape, 3.0, 1.5)], dtype)


def test_public_calc_mean_std_shapes_and_values():
    feat = fresh((2, 4, 5, 3), 2.0, -1.0)
    mean, std = adain_np.calc_mean_std(feat)
    assert mean.shape == std.shape == (2, 4, 1, 1)
    # Written out by hand: the unbiased variance divides by L-1 = 14.
    flat = feat.reshape(2, 4, 15)
    expected_std = np.sqrt(((flat - flat.mean(-1, keepdims=True)) ** 2).sum(-1) / 14 + 1e-5)
    np.testing.assert_allclose(std[:, :, 0, 0], expected_std, rtol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 0.3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adain_vs_torch_both_inputs(alpha, dtype):
    def torch_adain(c, s):
        return alpha * ref.adaptive_instance_normalization(c, s) + (1 - alpha) * c
    check_against_torch(lambda c, s: stats.adain_forward(c, s, alpha), stats.adain_backward,
                        torch_adain, [fresh((2, 5, 9, 7), 2.0, 1.0), fresh((2, 5, 6, 11), 0.5, -2.0)],
                        dtype)


def test_public_adain_matches_torch():
    c, s = fresh((1, 3, 17, 23), 2.0), fresh((1, 3, 8, 5), 0.7, 3.0)
    out = adain_np.adaptive_instance_normalization(c, s)
    expected = ref.adaptive_instance_normalization(torch.tensor(c), torch.tensor(s)).numpy()
    assert rel_error(out, expected) < 1e-12  # float64 on both sides


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mse_vs_torch(dtype):
    check_against_torch(losses.mse_forward, losses.mse_backward, F.mse_loss,
                        [fresh((2, 5, 9, 7)), fresh((2, 5, 9, 7))], dtype)


def style_loss_forward(*feats):
    # feats: 4 decoded-image features, then 4 style features
    g_feats, s_feats = feats[:4], feats[4:]
    loss, cache = losses.style_loss_forward(list(g_feats), [stats.calc_mean_std(s) for s in s_feats])
    return np.asarray(loss), cache


def style_loss_backward(dloss, cache):
    return tuple(losses.style_loss_backward(float(dloss), cache))


STYLE_SHAPES = [(2, 3, 8, 6), (2, 4, 4, 3), (2, 5, 3, 2), (2, 6, 2, 2)]


def test_style_loss_vs_torch():
    def torch_style_loss(*feats):
        g_feats, s_feats = feats[:4], feats[4:]
        total = 0
        for g, s in zip(g_feats, s_feats):
            gm, gs = ref.calc_mean_std(g)
            sm, ss = ref.calc_mean_std(s.detach())
            total = total + F.mse_loss(gm, sm) + F.mse_loss(gs, ss)
        return total
    feats = [fresh(s, 2.0) for s in STYLE_SHAPES] + [fresh(s, 1.0, 0.5) for s in STYLE_SHAPES]

    def backward(dloss, cache):  # the style features get no gradient, as in pytorch-AdaIN
        return style_loss_backward(dloss, cache) + tuple(np.zeros_like(f) for f in feats[4:])
    check_against_torch(style_loss_forward, backward, torch_style_loss, feats, np.float64)


def test_content_loss_vs_torch():
    g, t = fresh((2, 6, 4, 3)), fresh((2, 6, 4, 3))
    loss, cache = losses.content_loss_forward(g, t)
    gt = torch.tensor(g, requires_grad=True)
    lt = F.mse_loss(gt, torch.tensor(t))
    lt.backward()
    assert abs(float(loss) - lt.item()) < 1e-12 * abs(lt.item())
    assert rel_error(losses.content_loss_backward(1.0, cache), gt.grad.numpy()) < 1e-12


# --- finite differences (float64) ---------------------------------------------

def test_gradcheck_calc_mean_std():
    gradcheck(mean_std_pair_forward, mean_std_pair_backward, [fresh((2, 3, 4, 5), 2.0, 1.0)])


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_gradcheck_adain_both_inputs(alpha):
    gradcheck(lambda c, s: stats.adain_forward(c, s, alpha), stats.adain_backward,
              [fresh((2, 3, 4, 5), 2.0, 1.0), fresh((2, 3, 3, 4), 0.5, -1.0)])


def test_gradcheck_mse():
    gradcheck(losses.mse_forward, losses.mse_backward, [fresh((2, 3, 4, 5)), fresh((2, 3, 4, 5))])


def test_gradcheck_style_loss():
    feats = [fresh(s, 2.0) for s in STYLE_SHAPES] + [fresh(s) for s in STYLE_SHAPES]
    gradcheck(style_loss_forward, lambda d, c: style_loss_backward(d, c), feats, which=range(4))


def test_gradcheck_content_loss():
    t = fresh((2, 3, 4, 5))
    gradcheck(lambda g: losses.content_loss_forward(g, t),
              lambda d, c: losses.content_loss_backward(float(d), c), [fresh((2, 3, 4, 5))])
