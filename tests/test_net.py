"""The whole Net against a torch transcription of pytorch-AdaIN's Net, on the same random weights."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import adain_np
from adain_np.backend import NumpyBackend
from adain_np.params import (DECODER_LAYERS, DECODER_SHAPES, ENCODER_END, ENCODER_SHAPES,
                             ENCODER_SLICES, VGG_LAYERS, VGG_SHAPES, init_decoder_params,
                             init_vgg_params)
from helpers import rel_error
from torch_reference import (ENCODER_CUTS, TorchNet, adaptive_instance_normalization, make_decoder,
                             make_vgg)

VGG = init_vgg_params(seed=0)
DECODER = init_decoder_params(seed=0)


def images(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)


# float32: the two sides round differently (BLAS vs torch conv kernels), ~1e-6 per layer.
# One more effect sets the bound: a max-pool window whose top two values are within
# float32 rounding can pick different winners on the two sides, which moves ~2e-5 of
# the gradient. The bound, 1e-4, leaves room for a few such flips.
# Winograd F(4,3) rounds more: its per-conv norm-relative error is 0.5-1.7e-6 against
# im2col's ~3e-7 (bench conv-errors), compounded over 14 convs forward and 13 backward,
# and the near-tie flips above then move more of the gradient: ~2e-4 seen. Bound 1e-3.
FLOAT32_RTOL = {"im2col": 1e-4, "auto": 1e-3, "winograd": 1e-3}


@pytest.mark.parametrize("conv_mode", ["im2col", "auto", "winograd"])
@pytest.mark.parametrize("shape,alpha", [((2, 3, 64, 48), 1.0), ((1, 3, 67, 45), 0.7)])
def test_net_losses_and_decoder_grads_match_torch_float32(shape, alpha, conv_mode):
    content, style = images(shape, seed=shape[2])
    net = adain_np.Net(VGG, DECODER, NumpyBackend(conv_mode=conv_mode))
    rtol = FLOAT32_RTOL[conv_mode]
    loss_c, loss_s = net.forward(content, style, alpha)
    grads = net.backward(content_weight=1.0, style_weight=10.0)
    torch_net = TorchNet(VGG, DECODER)
    t_c, t_s, t_grads = torch_net.decoder_grads(torch.tensor(content), torch.tensor(style), alpha,
                                                content_weight=1.0, style_weight=10.0)
    assert isinstance(loss_c, float) and isinstance(loss_s, float)
    assert abs(loss_c - t_c) <= rtol * abs(t_c)
    assert abs(loss_s - t_s) <= rtol * abs(t_s)
    assert set(grads) == set(DECODER_SHAPES)
    for key, expected in t_grads.items():
        assert grads[key].shape == expected.shape
        err = rel_error(grads[key], expected)
        assert err < rtol, f"{key}: rel error {err:.2e}"


def test_net_matches_torch_float64():
    # In float64 rounding is ~1e-16, so anything above 1e-9 would be a real bug.
    content, style = images((1, 3, 35, 29), seed=5)
    vgg64 = {k: v.astype(np.float64) for k, v in VGG.items()}
    dec64 = {k: v.astype(np.float64) for k, v in DECODER.items()}
    net = adain_np.Net(vgg64, dec64, NumpyBackend(np.float64))
    loss_c, loss_s = net.forward(content, style, 0.6)
    grads = net.backward(content_weight=2.0, style_weight=3.0)
    t_c, t_s, t_grads = TorchNet(vgg64, dec64, torch.float64).decoder_grads(
        torch.tensor(content, dtype=torch.float64), torch.tensor(style, dtype=torch.float64), 0.6,
        content_weight=2.0, style_weight=3.0)
    assert abs(loss_c - t_c) < 1e-9 * t_c and abs(loss_s - t_s) < 1e-9 * t_s
    for key, expected in t_grads.items():
        assert rel_error(grads[key], expected) < 1e-9, key


def torch_from_table(layers):
    """What our layer tables (params.py) say, built as torch modules."""
    make = {"conv": lambda _, cin, cout, k: nn.Conv2d(cin, cout, (k, k)),
            "pad": lambda _: nn.ReflectionPad2d((1, 1, 1, 1)),
            "relu": lambda _: nn.ReLU(),
            "pool": lambda _: nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True),
            "up": lambda _: nn.Upsample(scale_factor=2, mode="nearest")}
    return nn.Sequential(*[make[layer[0]](*layer) for layer in layers])


def describe(seq):
    """Every architectural attribute of each module, and the state dict's keys and shapes."""
    def attrs(m):
        if isinstance(m, nn.Conv2d):
            return (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                    m.dilation, m.groups, m.bias is not None, m.padding_mode)
        if isinstance(m, nn.ReflectionPad2d):
            return tuple(m.padding)
        if isinstance(m, nn.MaxPool2d):
            return (m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if isinstance(m, nn.Upsample):
            return (m.scale_factor, m.mode, m.size)
        assert isinstance(m, nn.ReLU), type(m)
        return ()
    modules = [(name, type(m).__name__, attrs(m)) for name, m in seq.named_children()]
    state = {k: tuple(v.shape) for k, v in seq.state_dict().items()}
    return modules, state


def test_our_tables_build_pytorch_adains_networks():
    # tests/torch_reference.py writes net.py's vgg and decoder out by hand; our tables must
    # build exactly those modules, so that a wrong table row can't hide on both sides.
    for layers, reference, shapes in [(VGG_LAYERS, make_vgg(), VGG_SHAPES),
                                      (DECODER_LAYERS, make_decoder(), DECODER_SHAPES)]:
        ours, theirs = describe(torch_from_table(layers)), describe(reference)
        assert len(ours[0]) == len(theirs[0])
        for mine, ref in zip(ours[0], theirs[0]):
            assert mine == ref
        assert ours[1] == theirs[1]
        assert shapes == theirs[1]  # params.py's shape tables are the state dict's
    assert ENCODER_SLICES == ENCODER_CUTS and ENCODER_END == ENCODER_CUTS[-1][1] == 31
    assert ENCODER_SHAPES == describe(make_vgg()[:31])[1]
    # The comparison can fail: one swapped pair of rows in a table is caught.
    swapped = list(DECODER_LAYERS)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert describe(torch_from_table(swapped))[0] != describe(make_decoder())[0]


def test_decoder_grads_by_finite_differences():
    """End to end, float64, tiny image: centred differences of the weighted loss
    for a few entries of every decoder parameter."""
    rng = np.random.default_rng(3)
    content, style = rng.random((1, 3, 16, 16)), rng.random((1, 3, 16, 16))
    vgg64 = {k: v.astype(np.float64) for k, v in VGG.items()}
    dec64 = {k: v.astype(np.float64).copy() for k, v in DECODER.items()}
    net = adain_np.Net(vgg64, dec64, NumpyBackend(np.float64))

    def total_loss():
        loss_c, loss_s = net.forward(content, style)
        return loss_c + 10.0 * loss_s
    total_loss()
    grads = net.backward(1.0, 10.0)
    h = 1e-5
    for key, param in net.decoder_params.items():
        flat = param.reshape(-1)
        for i in rng.choice(flat.size, size=2, replace=False):
            old = flat[i]
            flat[i] = old + h
            plus = total_loss()
            flat[i] = old - h
            minus = total_loss()
            flat[i] = old
            numeric = (plus - minus) / (2 * h)
            analytic = grads[key].reshape(-1)[i]
            # Losses here are ~1e3, so round-off in the difference is ~1e-13*1e3/1e-5 = 1e-5
            # absolute; add that to the relative bound for tiny gradient entries.
            assert abs(analytic - numeric) <= 1e-5 + 1e-4 * abs(numeric), (key, i, analytic, numeric)


def test_encoder_and_decoder_shapes():
    net = adain_np.Net(VGG, DECODER)
    x = np.random.default_rng(0).random((1, 3, 67, 45), dtype=np.float32)
    feats = net.encode_with_intermediate(x)
    # Each ceil-mode pool rounds up: 67 -> 34 -> 17 -> 9, 45 -> 23 -> 12 -> 6.
    assert [f.shape for f in feats] == [(1, 64, 67, 45), (1, 128, 34, 23), (1, 256, 17, 12),
                                        (1, 512, 9, 6)]
    assert net.decode(feats[-1]).shape == (1, 3, 72, 48)


def test_style_transfer_matches_torch():
    content, style = images((1, 3, 40, 56), seed=7)
    style = style[:, :, :32, :24]
    out = adain_np.style_transfer(VGG, DECODER, content, style, alpha=0.5)
    torch_net = TorchNet(VGG, DECODER)
    with torch.no_grad():
        cf = torch_net.encode(torch.tensor(content))
        sf = torch_net.encode(torch.tensor(style))
        feat = 0.5 * adaptive_instance_normalization(cf, sf) + 0.5 * cf
        expected = torch_net.decoder(feat).numpy()
    assert rel_error(out, expected) < 1e-5  # float32, a handful of layers of rounding


def test_full_53_module_vgg_is_accepted_and_later_modules_ignored():
    full = init_vgg_params(seed=0, full=True)
    assert len(full) == len(VGG_SHAPES) == 34
    x = np.random.default_rng(1).random((1, 3, 24, 24), dtype=np.float32)
    a = adain_np.Net(full, DECODER).encode(x)
    b = adain_np.Net(VGG, DECODER).encode(x)
    np.testing.assert_array_equal(a, b)


def test_wrong_parameters_are_named():
    bad = dict(DECODER)
    bad["5.weight"] = np.zeros((256, 256, 3, 1), np.float32)
    with pytest.raises(ValueError, match=r"'5.weight'.*\(256, 256, 3, 1\).*\(256, 256, 3, 3\)"):
        adain_np.Net(VGG, bad)
    missing = {k: v for k, v in VGG.items() if k != "29.bias"}
    with pytest.raises(ValueError, match="missing key '29.bias'"):
        adain_np.Net(missing, DECODER)


def test_alpha_out_of_range_is_refused():
    net = adain_np.Net(VGG, DECODER)
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match="alpha"):
        net.forward(x, x, alpha=1.5)


def test_library_never_imports_torch():
    # No module of the package may import torch, even lazily inside a function: torch is a
    # test-only reference (the torch sides of the benchmarks live in tools/).
    import ast
    import pathlib
    import subprocess
    import sys
    package = pathlib.Path(adain_np.__file__).parent
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "torch" or n.startswith("torch.") or "torch_reference" in n
                           for n in names), f"{path.name}:{node.lineno} imports {names}"
    code = ("import sys, adain_np, adain_np.net, adain_np.backend, adain_np.conv, adain_np.bench;"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_net_copies_its_parameters():
    # Training updates net.decoder_params in place; the caller's dict must not change.
    decoder = {k: v.copy() for k, v in DECODER.items()}
    net = adain_np.Net(VGG, decoder)
    net.decoder_params["1.bias"] += 1.0
    np.testing.assert_array_equal(decoder["1.bias"], DECODER["1.bias"])
