"""Every kernel version in kernels/*.cu against the float64 NumPy reference (backend.py).

Each test runs on the CPU emulator ("emulator", always) and on a real GPU ("gpu", marked
`gpu`, skipped with the reason when there is none). Shapes are odd and do not fill a tile:
a conv sees partial tiles in both GEMM dimensions and, for the 128x128 versions, a tile
that is mostly empty.
"""
import zlib

import os
import sys

import numpy as np
import pytest
import torch

from adain_np.backend import NumpyBackend
from adain_np.cuda import gpu
from adain_np.cuda.emulator_launcher import EmulatorLauncher
from adain_np.cuda import versions
from adain_np.cuda.kernel_backend import KernelBackend
from adain_np.cuda.versions import (CONV_BACKWARD_BIAS_VERSIONS, CONV_BACKWARD_DATA_TILES,
                                    CONV_BACKWARD_WEIGHT_TILES, CONV_FORWARD_TILES,
                                    INSTANCE_STATS_VERSIONS)

# Tolerances. The kernels accumulate in float32 in their own order (tiles, split-K,
# shuffle trees); the reference sums the same float32 inputs in float64. Over at most
# ~800 terms that differs by ~1e-7..1e-6 of the result's scale (measured: <= 1.1e-6), and
# nvcc fuses multiply-adds where the emulator's g++ does not, which moves single results
# by a few ulps more. An indexing or masking error shows up at 1e-2 or more.
#   REL_NORM: ||got - ref|| / ||ref||        REL_MAX: max |got - ref| / max |ref|
REL_NORM = 2e-5
REL_MAX = 1e-4

BACKENDS = ["emulator", pytest.param("gpu", marks=pytest.mark.gpu)]
REFERENCE = NumpyBackend(np.float64)

# (N, Cin, Cout, H, W, k). Odd sizes; 1x3x17x23 as an image; Cin = Cout = 64 as in VGG;
# H = 2 and H = 3, where the reflection fold puts two or three padded rows on one row;
# a 1x1 conv like vgg's first layer; Cout = 130 and Cin*9 = 171 fill one 128-tile and a
# sliver of the next in both GEMM dimensions (backward-weight v4), with W = 9 and H*W = 27
# not multiples of a K-slice, so the stepping position wraps rows and images mid-slice.
CONV_SHAPES = [(2, 5, 7, 9, 7, 3), (1, 3, 6, 17, 23, 3), (1, 64, 64, 6, 5, 3),
               (2, 4, 3, 2, 3, 3), (1, 2, 5, 3, 4, 3), (2, 3, 3, 5, 4, 1),
               (2, 19, 130, 3, 9, 3)]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    if request.param == "gpu":
        ok, reason = gpu.gpu_available()
        if not ok:
            pytest.skip(f"no GPU: {reason}")
        return KernelBackend(gpu.CupyLauncher())
    return KernelBackend(EmulatorLauncher())


def assert_close(got, ref, what=""):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    scale = np.abs(ref).max()
    norm_err = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)
    max_err = np.abs(got - ref).max() / max(scale, 1e-30)
    assert norm_err < REL_NORM, f"{what}: relative error {norm_err:.2e} >= {REL_NORM:.0e}"
    assert max_err < REL_MAX, f"{what}: max error {max_err:.2e} of the scale >= {REL_MAX:.0e}"


def rng_for(*key):
    # Fresh inputs per test, reproducible run to run (str hashes are salted, crc32 is not).
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def conv_case(shape, relu):
    """float32 inputs, and the float64 reference outputs and gradients."""
    N, Cin, Cout, H, W, k = shape
    rng = rng_for("conv", shape, relu)
    x = rng.standard_normal((N, Cin, H, W)).astype(np.float32)
    w = (rng.standard_normal((Cout, Cin, k, k)) / np.sqrt(Cin * k * k)).astype(np.float32)
    b = rng.standard_normal(Cout).astype(np.float32)
    dy = rng.standard_normal((N, Cout, H, W)).astype(np.float32)
    y_ref, cache = REFERENCE.conv_forward(x.astype(np.float64), w.astype(np.float64),
                                          b.astype(np.float64), k == 3, relu)
    grads_ref = REFERENCE.conv_backward(dy.astype(np.float64), cache)
    return (x, w, b, dy), y_ref, grads_ref


def to_device(backend, *arrays):
    return [backend.asarray(a) for a in arrays]


# ------------------------------------------------------------------------------ conv

@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("version", sorted(CONV_FORWARD_TILES))
def test_conv_forward(backend, shape, relu, version):
    (x, w, b, _), y_ref, _ = conv_case(shape, relu)
    y, _ = backend.conv_forward(*to_device(backend, x, w, b), shape[5] == 3, relu,
                                version=version)
    assert_close(backend.to_host(y), y_ref, f"conv2d_forward_v{version}")


@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("version", sorted(CONV_BACKWARD_DATA_TILES))
def test_conv_backward_data(backend, shape, relu, version):
    (x, w, b, dy), _, (dx_ref, _, _) = conv_case(shape, relu)
    x, w, b, dy = to_device(backend, x, w, b, dy)
    _, cache = backend.conv_forward(x, w, b, shape[5] == 3, relu, version=1)
    dx, dw, db = backend.conv_backward(dy, cache, need_dw=False, data_version=version)
    assert dw is None and db is None
    assert_close(backend.to_host(dx), dx_ref, f"conv2d_backward_data_v{version}")


def weight_cases():
    # (shape, version, splits). "several" forces split-K (partials, then sum_splits) by
    # shrinking the pixels per split to one K-slice; only shapes with at least two K-slices
    # of pixels can split.
    for shape in CONV_SHAPES:
        pixels = shape[0] * shape[3] * shape[4]
        yield shape, 1, "one"
        for version, tile in sorted((v, t) for v, t in CONV_BACKWARD_WEIGHT_TILES.items() if t):
            yield shape, version, "one"
            if pixels >= 2 * tile[2]:  # tile = (M, N, BK, threads)
                yield shape, version, "several"


@pytest.mark.parametrize("shape,version,splits", list(weight_cases()))
@pytest.mark.parametrize("relu", [False, True])
def test_conv_backward_weight(backend, shape, relu, version, splits):
    (x, w, b, dy), _, (_, dw_ref, db_ref) = conv_case(shape, relu)
    x, w, b, dy = to_device(backend, x, w, b, dy)
    _, cache = backend.conv_forward(x, w, b, shape[5] == 3, relu, version=1)
    N, _, _, H, W, _ = shape
    if splits == "several":
        bk = CONV_BACKWARD_WEIGHT_TILES[version][2]
        assert backend.split_k(1, N * H * W, bk, min_chunk=bk)[0] > 1
        backend.split_k_min_chunk = bk
    try:
        dx, dw, db = backend.conv_backward(dy, cache, need_dx=False, weight_version=version)
    finally:
        backend.split_k_min_chunk = KernelBackend.split_k_min_chunk
    assert dx is None
    assert_close(backend.to_host(dw), dw_ref, f"conv2d_backward_weight_v{version}")
    assert_close(backend.to_host(db), db_ref, f"db beside conv2d_backward_weight_v{version}")


@pytest.mark.parametrize("splits", ["one", "several"])
def test_weight_v9_fuses_the_bias_gradient(splits):
    # v9 writes db itself (per-split partials + sum_splits): no bias kernel is launched.
    shape = CONV_SHAPES[0]
    (x, w, b, dy), _, (_, dw_ref, db_ref) = conv_case(shape, True)
    launcher = RecordingLauncher()
    backend = KernelBackend(launcher)
    if splits == "several":
        backend.split_k_min_chunk = CONV_BACKWARD_WEIGHT_TILES[9].bk
    _, cache = backend.conv_forward(x, w, b, True, True, version=1)
    launcher.launched.clear()
    _, dw, db = backend.conv_backward(dy, cache, need_dx=False, weight_version=9)
    assert not any("bias" in name for name in launcher.launched), launcher.launched
    assert launcher.launched.count("sum_splits") == (2 if splits == "several" else 0)
    assert_close(dw, dw_ref, "dw v9")
    assert_close(db, db_ref, "db v9")


@pytest.mark.parametrize("shape", CONV_SHAPES[:3])
@pytest.mark.parametrize("version", CONV_BACKWARD_BIAS_VERSIONS)
def test_conv_backward_bias(backend, shape, version):
    (x, w, b, dy), _, (_, _, db_ref) = conv_case(shape, True)
    x, w, b, dy = to_device(backend, x, w, b, dy)
    _, cache = backend.conv_forward(x, w, b, shape[5] == 3, True, version=1)
    _, _, db = backend.conv_backward(dy, cache, need_dx=False, weight_version=1,
                                     bias_version=version)
    assert_close(backend.to_host(db), db_ref, f"conv2d_backward_bias_v{version}")


@pytest.mark.parametrize("relu", [False, True])
def test_conv_backward_bias_v3_in_many_chunks(backend, relu):
    # Chunks of 7 pixels: planes of 17*23 = 391 pixels end in a partial chunk, most threads
    # of a block are past the chunk's end, and sum_splits adds N * 56 partials.
    shape = (2, 3, 6, 17, 23, 3)
    (x, w, b, dy), _, (_, _, db_ref) = conv_case(shape, relu)
    x, w, b, dy = to_device(backend, x, w, b, dy)
    _, cache = backend.conv_forward(x, w, b, True, relu, version=1)
    backend.bias_chunk = 7
    try:
        _, _, db = backend.conv_backward(dy, cache, need_dx=False, weight_version=1,
                                         bias_version=3)
    finally:
        backend.bias_chunk = KernelBackend.bias_chunk
    assert_close(backend.to_host(db), db_ref, "conv2d_backward_bias_v3")


def test_conv_default_versions_and_relu_mask(backend):
    # The shape-picked versions, and a check that the ReLU mask is really applied:
    # with relu the gradient differs from the one without.
    (x, w, b, dy), y_ref, (dx_ref, dw_ref, db_ref) = conv_case(CONV_SHAPES[0], True)
    x, w, b, dy = to_device(backend, x, w, b, dy)
    y, cache = backend.conv_forward(x, w, b, True, True)
    dx, dw, db = backend.conv_backward(dy, cache)
    assert_close(backend.to_host(y), y_ref, "y")
    assert_close(backend.to_host(dx), dx_ref, "dx")
    assert_close(backend.to_host(dw), dw_ref, "dw")
    assert_close(backend.to_host(db), db_ref, "db")
    _, cache_linear = backend.conv_forward(x, w, b, True, False)
    dx_linear = backend.to_host(backend.conv_backward(dy, cache_linear)[0])
    assert np.abs(dx_linear - dx_ref).max() > 0.1


@pytest.mark.slow
def test_conv_kernels_stay_in_bounds_under_asan():
    # Clamped tile rows/columns and the reflection arithmetic must never read outside the
    # tensors; a plain run would read neighbouring memory silently. AddressSanitizer on
    # exactly sized copies turns such a read into an error. (Emulator only: no GPU here.)
    backend = KernelBackend(EmulatorLauncher(sanitize=True))
    shape = (2, 5, 7, 9, 7, 3)
    N, _, _, H, W, _ = shape
    (x, w, b, dy), y_ref, (dx_ref, dw_ref, db_ref) = conv_case(shape, True)
    for version in sorted(CONV_FORWARD_TILES):
        y, cache = backend.conv_forward(x, w, b, True, True, version=version)
        assert_close(y, y_ref, f"conv2d_forward_v{version}")
    backend.split_k_min_chunk = 16  # several splits: sum_splits runs too
    for version in sorted(CONV_BACKWARD_DATA_TILES):
        dx, _, _ = backend.conv_backward(dy, cache, need_dw=False, data_version=version)
        assert_close(dx, dx_ref, f"dx v{version}")
    for version in sorted(CONV_BACKWARD_WEIGHT_TILES):
        _, dw, db = backend.conv_backward(dy, cache, need_dx=False, weight_version=version,
                                          bias_version=min(version, 2))
        assert_close(dw, dw_ref, f"dw v{version}")
        assert_close(db, db_ref, "db")


class RecordingLauncher:
    """The emulator launcher, remembering the names of the kernels launched."""

    def __init__(self):
        self.inner = EmulatorLauncher()
        self.name, self.xp = self.inner.name, self.inner.xp
        self.launched = []

    def kernel(self, cu_file, name):
        self.launched.append(name)
        return self.inner.kernel(cu_file, name)


def test_tuned_versions_override_the_shape_rule():
    shape = CONV_SHAPES[0]
    N, Cin, Cout, H, W, k = shape
    (x, w, b, dy), y_ref, (dx_ref, dw_ref, _) = conv_case(shape, True)
    launcher = RecordingLauncher()
    tuned = {("forward", Cin, Cout, H, W, k): 1, ("bwd_data", Cin, Cout, H, W, k): 4,
             ("bwd_weight", Cin, Cout, H, W, k): 7}
    backend = KernelBackend(launcher, tuned_versions=tuned)
    y, cache = backend.conv_forward(x, w, b, True, True)
    dx, dw, _ = backend.conv_backward(dy, cache)
    assert {"conv2d_forward_v1", "conv2d_backward_data_v4",
            "conv2d_backward_weight_v7"} <= set(launcher.launched), launcher.launched
    assert_close(y, y_ref, "y")
    assert_close(dx, dx_ref, "dx")
    assert_close(dw, dw_ref, "dw")
    # Another shape is not in the table: the shape rule picks (Cout = 7 <= 8: the naive v1,
    # which beat every tile for the decoder's 64 -> 3 conv on the H200).
    launcher.launched.clear()
    backend.conv_forward(np.ascontiguousarray(x[:, :, :8]), w, b, True, True)
    assert launcher.launched == ["conv2d_forward_v1"]


# The per-shape winners measured on the H200 (kernels/results/h200_bench_gpu_round2.json),
# written out by hand: (op, Cin, Cout, N*H*W-ish shape) -> version the shape rule must pick.
MEASURED_WINNERS = [
    ("forward", 64, 3, 256, 1), ("forward", 3, 64, 256, 3), ("forward", 64, 64, 256, 3),
    ("forward", 64, 128, 128, 4), ("forward", 512, 256, 32, 4), ("forward", 256, 512, 32, 4),
    ("bwd_data", 3, 64, 256, 4), ("bwd_data", 64, 64, 256, 2), ("bwd_data", 128, 128, 128, 3),
    ("bwd_data", 256, 512, 32, 2),
    ("bwd_weight", 3, 64, 256, 6), ("bwd_weight", 64, 3, 256, 7), ("bwd_weight", 64, 64, 256, 4),
    ("bwd_weight", 512, 256, 32, 4),
]


@pytest.mark.parametrize("op,Cin,Cout,size,expected", MEASURED_WINNERS)
def test_shape_rule_picks_the_measured_winner(op, Cin, Cout, size, expected):
    N = 8
    if op == "forward":
        got = KernelBackend.pick_forward_version(Cout, N * size * size)
    elif op == "bwd_data":
        got = KernelBackend.pick_backward_data_version(Cin, N * (size + 2) ** 2)
    else:
        got = KernelBackend.pick_backward_weight_version(Cout, Cin * 9)
    assert got == expected


def test_conv_rejects_bad_inputs(backend):
    x = backend.asarray(np.zeros((1, 2, 4, 4)))
    w = backend.asarray(np.zeros((3, 2, 3, 3)))
    b = backend.asarray(np.zeros(3))
    with pytest.raises(TypeError, match="float32"):
        backend.conv_forward(x.astype(np.float64), w, b, True, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        backend.conv_forward(x.transpose(0, 1, 3, 2), w, b, True, False)
    with pytest.raises(ValueError, match="do not match"):
        backend.conv_forward(x, w[:, :1].copy(), b, True, False)
    with pytest.raises(ValueError, match="reflection"):
        backend.conv_forward(x, w, b, False, False)
    with pytest.raises(ValueError, match="H and W > 1"):
        backend.conv_forward(backend.asarray(np.zeros((1, 2, 1, 4))), w, b, True, False)


def test_split_k_covers_every_pixel():
    for tiles, pixels, bk in [(1, 100, 16), (8, 524288, 8), (300, 5000, 16), (1, 1, 8)]:
        splits, chunk = KernelBackend.split_k(tiles, pixels, bk)
        assert chunk % bk == 0 and splits >= 1
        assert (splits - 1) * chunk < pixels <= splits * chunk


def test_wave_model_on_the_issue_shape():
    # 256 -> 256 at 8x64^2 on 132 SMs, 2 blocks of the 128x128 tile per SM: 2 x 18 tiles,
    # 32768 pixels. split_k gives 15 splits = 540 blocks = 2.05 waves (3 paid, 68% used).
    assert KernelBackend.split_k(36, 32768, 8) == (15, 2192)
    assert versions.waves(540, 132, 2) == 3
    assert versions.wave_efficiency(540, 132, 2) == pytest.approx(540 / 792)
    # 22 splits of 1496 pixels: 792 blocks, three whole waves (3 x 1496 < 3 x 2192).
    assert versions.split_k_by_waves(36, 32768, 8, 132, 2) == (22, 1496)
    # One tile and few pixels: no split beats the min_chunk floor.
    assert versions.split_k_by_waves(1, 1500, 8, 132, 2) == (1, 1504)


def test_split_k_by_waves_covers_every_pixel_and_prefers_fewer_splits():
    for tiles, pixels, bk, sms, per_sm in [(1, 100, 16, 132, 2), (8, 524288, 8, 132, 2),
                                           (300, 5000, 16, 40, 3), (1, 1, 8, 1, 1)]:
        splits, chunk = versions.split_k_by_waves(tiles, pixels, bk, sms, per_sm)
        assert chunk % bk == 0 and splits >= 1
        assert (splits - 1) * chunk < pixels <= splits * chunk
    # 264 slots and 264 tiles: one full wave already; splitting only adds waves.
    assert versions.split_k_by_waves(264, 1 << 20, 8, 132, 2)[0] == 1


def test_pick_tile_by_waves():
    tiles = {2: (64, 64, 3, 1.0), 3: (128, 128, 2, 1.0)}
    # Cin = 64, 8 x 66^2 padded columns: the 128-row tile is half empty (v3: 273 blocks,
    # 2 waves x 16384; v2: 545 blocks, 2 waves x 4096).
    assert versions.pick_tile_by_waves(64, 8 * 66 * 66, tiles, 132) == 2
    # Cin = 256, 8 x 34^2: v3 2 x 73 = 146 blocks (1 wave x 16384); v2 4 x 145 = 580
    # blocks, 2 waves x 4096 = 8192: the small tile wins unless it is slower per block.
    assert versions.pick_tile_by_waves(256, 8 * 34 * 34, tiles, 132) == 2
    assert versions.pick_tile_by_waves(256, 8 * 34 * 34, {2: (64, 64, 3, 0.4), 3: (128, 128, 2, 1.0)},
                                       132) == 3


# ------------------------------------------------------------------------------ pool, upsample

POOL_SHAPES = [(2, 3, 9, 7), (1, 2, 8, 6), (1, 2, 1, 1), (1, 1, 3, 2)]


@pytest.mark.parametrize("shape", POOL_SHAPES)
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool(backend, shape, ties):
    rng = rng_for("pool", shape, ties)
    # Ties (values from {0, 1, 2}) check that the first maximum in window order gets the
    # gradient, as in torch.
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(((shape[0], shape[1], (shape[2] + 1) // 2, (shape[3] + 1) // 2))
                             ).astype(np.float32)
    y, cache = backend.maxpool_forward(backend.asarray(x))
    dx = backend.maxpool_backward(backend.asarray(dy), cache)

    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 2, 2, ceil_mode=True)
    yt.backward(torch.tensor(dy))
    # Selection and routing copy values: exact equality.
    np.testing.assert_array_equal(backend.to_host(y), yt.detach().numpy())
    np.testing.assert_array_equal(backend.to_host(dx), xt.grad.numpy())


@pytest.mark.parametrize("shape", POOL_SHAPES)
def test_upsample(backend, shape):
    rng = rng_for("up", shape)
    x = rng.standard_normal(shape).astype(np.float32)
    N, C, H, W = shape
    dy = rng.standard_normal((N, C, 2 * H, 2 * W)).astype(np.float32)
    y, cache = backend.upsample_forward(backend.asarray(x))
    dx = backend.upsample_backward(backend.asarray(dy), cache)
    y_ref, cache_ref = REFERENCE.upsample_forward(x.astype(np.float64))
    np.testing.assert_array_equal(backend.to_host(y), y_ref)  # copies: exact
    assert_close(backend.to_host(dx), REFERENCE.upsample_backward(dy.astype(np.float64),
                                                                  cache_ref), "upsample_backward")


# ------------------------------------------------------------------------------ statistics

STATS_SHAPES = [(2, 3, 9, 7), (1, 4, 17, 23), (1, 2, 1, 2), (1, 3, 40, 40)]


@pytest.mark.parametrize("shape", STATS_SHAPES)
@pytest.mark.parametrize("version", INSTANCE_STATS_VERSIONS)
def test_mean_std(backend, shape, version):
    rng = rng_for("stats", shape)
    x = rng.standard_normal(shape).astype(np.float32)
    mean, std = backend.mean_std(backend.asarray(x), version=version)
    mean_ref, std_ref = REFERENCE.mean_std(x.astype(np.float64))
    assert_close(backend.to_host(mean), mean_ref, "mean")
    assert_close(backend.to_host(std), std_ref, "std")


@pytest.mark.parametrize("version", INSTANCE_STATS_VERSIONS)
def test_mean_std_is_stable_with_a_large_offset(backend, version):
    # 1000 + N(0, 1): a float32 sum of squares (E[x^2] - E[x]^2) loses every digit of the
    # variance here; Welford/Chan (v2) and the two-pass v1 keep it to ~1e-5 relative
    # (the inputs themselves are rounded to 6e-5 absolute at 1000).
    rng = rng_for("offset")
    x = (1000 + rng.standard_normal((1, 2, 64, 64))).astype(np.float32)
    mean, std = backend.mean_std(backend.asarray(x), version=version)
    mean_ref, std_ref = REFERENCE.mean_std(x.astype(np.float64))
    np.testing.assert_allclose(backend.to_host(mean), mean_ref, rtol=1e-6)
    np.testing.assert_allclose(backend.to_host(std), std_ref, rtol=1e-4)


@pytest.mark.parametrize("version", INSTANCE_STATS_VERSIONS)
def test_mean_std_single_pixel_is_nan_like_torch(backend, version):
    x = np.ones((1, 2, 1, 1), dtype=np.float32)
    _, std = backend.mean_std(backend.asarray(x), version=version)
    assert np.all(np.isnan(backend.to_host(std)))  # unbiased variance of one value


@pytest.mark.parametrize("shape", STATS_SHAPES[:2])
@pytest.mark.parametrize("which", ["both", "mean", "std"])
def test_mean_std_backward(backend, shape, which):
    rng = rng_for("stats-bwd", shape, which)
    x = rng.standard_normal(shape).astype(np.float32)
    dmean = rng.standard_normal(shape[:2] + (1, 1)).astype(np.float32)
    dstd = rng.standard_normal(shape[:2] + (1, 1)).astype(np.float32)
    dmean = None if which == "std" else dmean
    dstd = None if which == "mean" else dstd
    xd = backend.asarray(x)
    mean, std = backend.mean_std(xd)
    dx = backend.mean_std_backward(None if dmean is None else backend.asarray(dmean),
                                   None if dstd is None else backend.asarray(dstd), xd, mean, std)
    x64 = x.astype(np.float64)
    mean_ref, std_ref = REFERENCE.mean_std(x64)
    dx_ref = REFERENCE.mean_std_backward(dmean, dstd, x64, mean_ref, std_ref)
    assert_close(backend.to_host(dx), dx_ref, "mean_std_backward")


@pytest.mark.parametrize("alpha", [1.0, 0.6])
@pytest.mark.parametrize("broadcast_style", [False, True])
def test_adain_forward(backend, alpha, broadcast_style):
    rng = rng_for("adain", alpha, broadcast_style)
    content = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    style = (2 + 3 * rng.standard_normal((1 if broadcast_style else 2, 3, 5, 6))).astype(np.float32)
    style_mean, style_std = backend.mean_std(backend.asarray(style))
    t, _ = backend.adain_forward(backend.asarray(content), style_mean, style_std, alpha)
    sm_ref, ss_ref = REFERENCE.mean_std(style.astype(np.float64))
    sm_ref = np.broadcast_to(sm_ref, (2, 3, 1, 1))
    ss_ref = np.broadcast_to(ss_ref, (2, 3, 1, 1))
    t_ref, _ = REFERENCE.adain_forward(content.astype(np.float64), sm_ref, ss_ref, alpha)
    assert_close(backend.to_host(t), t_ref, "adain_forward")


# ------------------------------------------------------------------------------ Adam

def test_adam_matches_torch(backend):
    rng = rng_for("adam")
    shape = (7, 5, 3, 3)
    p0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    lr, betas, eps = 1e-2, (0.9, 0.999), 1e-8

    param = backend.asarray(p0)
    m = backend.asarray(np.zeros(shape))
    v = backend.asarray(np.zeros(shape))
    pt = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.Adam([pt], lr=lr, betas=betas, eps=eps)
    for step, g in enumerate(grads, start=1):
        backend.adam_step(param, backend.asarray(g), m, v, lr, betas[0], betas[1], eps, step)
        pt.grad = torch.tensor(g)
        opt.step()
    # Compare the change, not the parameter: float32 on both sides, same formulas; the
    # residue is rounding of single operations (and FMA contraction on the GPU).
    update = backend.to_host(param).astype(np.float64) - p0
    update_ref = pt.detach().numpy().astype(np.float64) - p0
    assert np.abs(update).max() > 1e-3  # it moved
    np.testing.assert_allclose(update, update_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(backend.to_host(m), opt.state[pt]["exp_avg"].numpy(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(backend.to_host(v), opt.state[pt]["exp_avg_sq"].numpy(),
                               rtol=1e-5, atol=1e-9)


# ------------------------------------------------------------------------------ bench_gpu logic

def test_bench_gpu_conv_shapes_and_step_flops():
    # Hand count from pytorch-AdaIN's architecture: 12 distinct conv shapes at 256x256; the
    # 256->256 conv at 64x64 is vgg conv3_2..3_4 and decoder 5, 8, 11: the encoder runs
    # forward 3 times per step (style, content, g(t)) and backward-data once, the decoder
    # once each. A step's conv work is ~1.75 TFLOP (shared/facts.md).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "tools"))
    from bench_gpu import conv_shapes, step_flops, tuned_table
    shapes = conv_shapes(8, 256)
    assert len(shapes) == 12
    s = next(s for s in shapes if (s["Cin"], s["Cout"], s["H"]) == (256, 256, 64))
    assert s["step_count"] == {"forward": 12, "bwd_data": 6, "bwd_weight": 3}
    first_decoder = next(s for s in shapes if (s["Cin"], s["Cout"]) == (512, 256))
    assert first_decoder["step_count"] == {"forward": 1, "bwd_data": 0, "bwd_weight": 1}
    assert abs(step_flops(shapes) / 1e12 - 1.752) < 0.01
    rows = [dict(op="bwd_weight", Cin=3, Cout=64, H=16, W=16, k=3, version=v, ms=ms, ok=ok)
            for v, ms, ok in (("cuDNN", 0.1, None), ("v2", 2.0, True), ("v6", 0.5, True),
                              ("v7", 0.2, False))]
    assert tuned_table(rows) == {("bwd_weight", 3, 64, 16, 16, 3): 6}  # v7 failed its check
