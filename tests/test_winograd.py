"""Winograd 3x3 conv (adain_np/winograd.py) against conv.py's im2col, torch and finite differences."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from adain_np import conv, winograd
from adain_np.backend import NumpyBackend
from adain_np.cli import UserError, apply_conv_flag
from helpers import check_against_torch, gradcheck, rel_error

# Tolerances against im2col on the same inputs, norm-relative (rel_error).
# float64: both paths are exact algebra rounded at 53 bits; the F(4,3) transforms have
#   entries up to 8 and sum 36 terms, which amplifies rounding ~100x: ~1e-14, so 1e-12.
# float32: the same amplification at 24 bits. Measured F(4,3) error against float64 is
#   ~2e-6 (see the error table), im2col's ~4e-7; 2e-5 leaves room over C <= 64.
#   An indexing bug (a wrong tile, a lost overhang) gives 1e-1 or more.
RTOL = {np.float64: 1e-12, np.float32: 2e-5}
TILES = winograd.TILES

# (N, C, F, H, W) of the *padded* input: sizes down to 4x4 (a 2x2 map after the reflection
# pad), odd sizes, widths that are not a multiple of the tile, batch > 1, one channel.
SHAPES = [(1, 3, 4, 4, 4), (2, 5, 7, 5, 7), (3, 8, 6, 9, 13), (1, 1, 1, 3, 3), (2, 16, 3, 6, 11), (1, 4, 9, 18, 10)]


def _inputs(shape, dtype, seed=0):
    N, C, F, H, W = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b


def test_transforms_match_the_paper():
    # Lavin & Gray 2015, eq. (6)-(7) and section 4.2, typed in by hand (not generated).
    # y = sum_j AT[:, j] (G[j] . g) (BT[j] . d): each term j is fixed, but a scale can move
    # between AT's column j, G's row j and BT's row j. The paper's F(2,3) signs differ from
    # ours in rows 0 and 3, so compare the terms; F(4,3) is the same to the entry.
    def terms(AT, G, BT):
        return [np.einsum("i,k,s->iks", np.array(AT, float)[:, j], np.array(G, float)[j],
                          np.array(BT, float)[j]) for j in range(len(G))]
    h = 0.5
    paper = ([[1, 1, 1, 0], [0, 1, -1, -1]], [[1, 0, 0], [h, h, h], [h, -h, h], [0, 0, 1]],
             [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    ours = winograd.cook_toom_matrices(2, winograd.TILE_POINTS[2])
    for t_ours, t_paper in zip(terms(*ours), terms(*paper)):
        assert np.array_equal(t_ours, t_paper)
    AT, G, BT = winograd.cook_toom_matrices(4, winograd.TILE_POINTS[4])
    assert BT == [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
    assert AT == [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
    assert G[0] == [Fraction(1, 4), 0, 0] and G[3] == [Fraction(1, 24), Fraction(1, 12), Fraction(1, 6)]


@pytest.mark.parametrize("m", [2, 4, 6])
def test_one_tile_is_the_1d_correlation(m):
    # y = AT [(G g) * (BT d)] must equal y_i = sum_k g_k d_{i+k}, computed directly.
    AT, G, BT = winograd.transform_matrices(m)
    rng = np.random.default_rng(m)
    g, d = rng.standard_normal(3), rng.standard_normal(m + 2)
    direct = np.array([g @ d[i:i + 3] for i in range(m)])
    assert np.allclose(AT @ ((G @ g) * (BT @ d)), direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_im2col(shape, m, dtype):
    x, w, b = _inputs(shape, dtype)
    for bias, relu in ((None, False), (b, True)):
        expected = conv.conv2d_valid(x.astype(np.float64), w.astype(np.float64),
                                     None if bias is None else bias.astype(np.float64), relu=relu)
        y = winograd.conv2d_valid(x, w, bias, relu=relu, m=m)
        assert y.dtype == dtype and y.shape == expected.shape
        assert rel_error(y, expected) < RTOL[dtype]


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("shape", SHAPES)
def test_input_grad_matches_im2col(shape, m):
    x, w, _ = _inputs(shape, np.float64)
    dy = np.random.default_rng(1).standard_normal((x.shape[0], w.shape[0], x.shape[2] - 2, x.shape[3] - 2))
    assert rel_error(winograd.conv2d_input_grad(dy, w, m=m), conv.conv2d_input_grad(dy, w)) < RTOL[np.float64]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_small_blocks_and_thread_pool(monkeypatch, threads):
    # A tiny block budget forces one tile row per block: many blocks per image, a last
    # block with the overhang, and (threads > 1) blocks spread over the pool.
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
    x, w, b = _inputs((3, 6, 5, 15, 14), np.float64)
    for m in TILES:
        y = winograd.conv2d_valid(x, w, b, relu=True, m=m, threads=threads)
        assert rel_error(y, conv.conv2d_valid(x, w, b, relu=True)) < RTOL[np.float64]


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_weight_grad_over_the_pool_matches_im2col(shape, threads):
    # The pooled weight gradient sums the same block products in another grouping.
    x, w, _ = _inputs(shape, np.float64)
    N, _, F, H, W = shape
    dy = np.random.default_rng(1).standard_normal((N, F, H - 2, W - 2))
    expected = conv.conv2d_weight_grad(x, dy, 3)
    got = winograd.weight_grad(x, dy, 3, threads=threads)
    assert got.shape == expected.shape == w.shape
    assert rel_error(got, expected) < RTOL[np.float64]


def test_weight_grad_uses_every_block_once(monkeypatch):
    # One row per block, 3 images: 3 * 8 blocks over 2 * 2 jobs; a lost or doubled block
    # would move dw by a whole block's product.
    monkeypatch.setattr(conv, "BLOCK_BYTES", 1)
    x = np.random.default_rng(2).standard_normal((3, 4, 10, 7))
    dy = np.random.default_rng(3).standard_normal((3, 5, 8, 5))
    assert rel_error(winograd.weight_grad(x, dy, 3, threads=2), conv.conv2d_weight_grad(x, dy, 3)) < 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", TILES)
def test_op_pair_against_torch(m, dtype):
    x, w, b = _inputs((2, 5, 4, 9, 7), np.float64)
    check_against_torch(lambda x, w, b: winograd.conv2d_forward(x, w, b, m=m), winograd.conv2d_backward,
                        lambda x, w, b: torch.nn.functional.conv2d(x, w, b), [x, w, b], dtype=dtype)


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("shape", [(2, 2, 3, 4, 4), (1, 3, 2, 7, 5)])
def test_gradcheck(shape, m):
    x, w, b = _inputs(shape, np.float64, seed=3)
    gradcheck(lambda x, w, b: winograd.conv2d_forward(x, w, b, m=m), winograd.conv2d_backward, [x, w, b])


def test_gradcheck_input_grad_op():
    # The backward-data conv is itself a linear op of dy: check it as one (its adjoint is the forward).
    x, w, _ = _inputs((1, 2, 3, 6, 5), np.float64, seed=4)
    dy = np.random.default_rng(5).standard_normal((1, 3, 4, 3))
    gradcheck(lambda dy: (winograd.conv2d_input_grad(dy, w, m=4), None),
              lambda g, _: winograd.conv2d_valid(g, w, m=4), [dy])


@pytest.mark.parametrize("mode", ["f2", "f4", "winograd"])
@pytest.mark.parametrize("k", [3, 1])
def test_backend_paths_agree(mode, k):
    # The backend's conv op (reflection pad, bias, ReLU, backward) on each path against im2col;
    # a 1x1 conv must stay on im2col whatever the mode.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 5, 6))                            # (N, C, H, W), a 5x6 map
    w = rng.standard_normal((3, 4, k, k))
    b = rng.standard_normal(3)
    dy = rng.standard_normal((2, 3, 5, 6) if k == 3 else (2, 3, 5, 6))
    results = []
    for backend in (NumpyBackend(np.float64, conv_mode="im2col"), NumpyBackend(np.float64, conv_mode=mode)):
        y, cache = backend.conv_forward(x, w, b, reflect_pad=(k == 3), relu=True)
        results.append((y, *backend.conv_backward(dy.copy(), cache), cache[-1]))
    for got, expected in zip(results[1][:4], results[0][:4]):
        assert rel_error(got, expected) < RTOL[np.float64]
    assert results[1][4] == ("im2col" if k == 1 else ("f2" if mode == "f2" else "f4"))


def test_rule_table_and_modes():
    assert winograd.conv_path("auto", 64, 64, 32, 32, 1) == "im2col"
    for (C, F), path in winograd.CONV_RULE.items():
        assert path in winograd.PATHS and winograd.conv_path("auto", C, F, 32, 32, 3) == path
    assert winograd.conv_path("auto", 7, 9, 11, 13, 3) == winograd.DEFAULT_PATH
    assert winograd.DEFAULT_PATH in winograd.PATHS


def test_bad_conv_environment_is_a_user_error(monkeypatch):
    class Args:
        conv = None
    monkeypatch.setenv("ADAIN_CONV", "fast")
    with pytest.raises(UserError, match="ADAIN_CONV"):
        apply_conv_flag(Args())
    with pytest.raises(ValueError, match="ADAIN_CONV"):
        NumpyBackend()
    monkeypatch.setenv("ADAIN_CONV", "f4")
    monkeypatch.setenv("ADAIN_CONV_THREADS", "-1")
    with pytest.raises(UserError, match="ADAIN_CONV_THREADS"):
        apply_conv_flag(Args())


@pytest.mark.parametrize("mode", ["f2", "f4"])
def test_net_on_winograd_matches_im2col_float64(mode):
    # Every 3x3 conv of the encoder and decoder (forward and backward-data) on Winograd:
    # in float64 the losses and decoder gradients equal the im2col network's (itself
    # checked against float64 torch in test_net.py) to rounding.
    import adain_np
    from adain_np.params import init_decoder_params, init_vgg_params
    vgg = {k: v.astype(np.float64) for k, v in init_vgg_params(0).items()}
    dec = {k: v.astype(np.float64) for k, v in init_decoder_params(0).items()}
    rng = np.random.default_rng(7)
    content, style = rng.random((2, 3, 19, 26)), rng.random((2, 3, 17, 23))
    results = []
    for conv_mode in ("im2col", mode):
        net = adain_np.Net(vgg, dec, NumpyBackend(np.float64, conv_mode=conv_mode))
        losses = net.forward(content, style, 0.8)
        results.append((losses, net.backward(content_weight=1.0, style_weight=10.0)))
    (ref_losses, ref_grads), (losses, grads) = results
    assert np.allclose(losses, ref_losses, rtol=1e-10, atol=0)
    for key, expected in ref_grads.items():
        assert rel_error(grads[key], expected) < 1e-10, key


def test_bench_convs_prints_a_rule_of_known_paths(capsys):
    # Mechanics only (tiny maps, one repeat): no timing is asserted.
    from adain_np import bench_convs
    rule = bench_convs.bench_convs(size=16, repeats=1, pool_threads=2)
    assert set(rule.values()) <= set(winograd.PATHS) - {winograd.DEFAULT_PATH}
    assert all(len(key) == 2 for key in rule)
    assert "CONV_RULE = {" in capsys.readouterr().out


def test_conv_flag_sets_the_backend_default(monkeypatch):
    monkeypatch.setenv("ADAIN_CONV", "auto")  # restored after the test: apply_conv_flag writes it

    class Args:
        conv = "f2"
    apply_conv_flag(Args())
    assert NumpyBackend().conv_mode == "f2"


# train keeps argparse's own usage error (usage lines, then the error), as train.py does.
@pytest.mark.parametrize("command, one_line", [("adain_np.stylize", True), ("adain_np.train", True),
                                               ("adain_np.bench", True)])
def test_a_bad_conv_flag_is_exit_2(command, one_line):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", command, "--conv", "fastest"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "--conv" in lines[-1] and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 or not one_line, proc.stderr


def test_pool_size_follows_the_blas_thread_setting(monkeypatch):
    for name in ("ADAIN_CONV_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(winograd.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert winograd.pool_threads_from_env() == 3                    # the usable cores
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert winograd.pool_threads_from_env() == 2
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")                 # an MPI rank with one thread
    assert winograd.pool_threads_from_env() == 1
    monkeypatch.setenv("ADAIN_CONV_THREADS", "0")                   # OpenBLAS's own threads
    assert winograd.pool_threads_from_env() == 0
    monkeypatch.setenv("ADAIN_CONV_THREADS", "x")
    with pytest.raises(ValueError, match="ADAIN_CONV_THREADS"):
        winograd.pool_threads_from_env()


@pytest.mark.parametrize("command", ["adain_np.stylize", "adain_np.train", "adain_np.gallery",
                                     "adain_np.stylize_video", "adain_np.bench"])
@pytest.mark.parametrize("variable, value", [("ADAIN_CONV", "fastest"), ("ADAIN_CONV_THREADS", "two")])
def test_a_bad_conv_environment_is_one_line_exit_2_in_every_command(command, variable, value, tmp_path):
    import os
    import subprocess
    import sys
    env = dict(os.environ, **{variable: value})
    required = ["--content_video", "clip.mp4", "--style_path", "style.png"] if command.endswith("video") else []
    proc = subprocess.run([sys.executable, "-m", command, *required], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and variable in proc.stderr, proc.stderr


def test_pooled_weight_grad_is_bit_reproducible():
    # Resume gives bit-identical losses only if every conv is deterministic under the pool.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 8, 20, 18)).astype(np.float32)
    dy = rng.standard_normal((4, 6, 18, 16)).astype(np.float32)
    first = winograd.weight_grad(x, dy, 3, threads=3)
    for _ in range(5):
        np.testing.assert_array_equal(winograd.weight_grad(x, dy, 3, threads=3), first)
