"""The emulator's race finder: a launch run under several thread and block orders must give
bitwise the same results (adain_np/cuda/emulator.py, RawKernel.check_race).

Planted races must be reported; every kernel version the project launches must pass.
"""
import numpy as np
import pytest

from adain_np.backend import NumpyBackend
from adain_np.cuda import emulator
from adain_np.cuda.emulator_launcher import EmulatorLauncher
from adain_np.cuda.kernel_backend import KernelBackend
from adain_np.cuda.versions import (CONV_BACKWARD_BIAS_VERSIONS, CONV_BACKWARD_DATA_TILES,
                                    CONV_BACKWARD_WEIGHT_TILES, CONV_FORWARD_TILES,
                                    INSTANCE_STATS_VERSIONS)

# Each thread stages its value in shared memory and adds its LEFT neighbour's, with the
# barrier between the write and the neighbour's read left out. In thread order every
# neighbour has already written, so a plain launch gives the right answer; run the
# threads in reverse and each reads a slot nobody has written yet (poison: NaN).
NEIGHBOUR_RACE = r"""
extern "C" __global__ void left_neighbour_sum(const float* __restrict__ x, float* __restrict__ y)
{
    __shared__ float s[256];
    const int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    BARRIER
    y[blockIdx.x * blockDim.x + t] = s[t] + (t > 0 ? s[t - 1] : 0.f);
}
"""

# Every block writes the same address: the last block to run wins.
BLOCK_RACE = r"""
extern "C" __global__ void last_block_wins(int* __restrict__ out)
{
    if (threadIdx.x == 0) out[0] = blockIdx.x;
}
"""


def neighbour_kernel(barrier):
    source = NEIGHBOUR_RACE.replace("BARRIER", "__syncthreads();" if barrier else "")
    return emulator.RawKernel(source, "left_neighbour_sum")


def neighbour_reference(x, block):
    rows = x.reshape(-1, block)
    return (rows + np.concatenate([np.zeros((len(rows), 1), np.float32), rows[:, :-1]], axis=1)).ravel()


def test_a_missing_barrier_hides_from_a_plain_launch_and_is_found_as_a_race():
    x = np.random.default_rng(0).standard_normal(3 * 64).astype(np.float32)
    y = np.empty_like(x)
    kernel = neighbour_kernel(barrier=False)
    kernel((3,), (64,), (x, y))                      # thread order: looks right
    np.testing.assert_array_equal(y, neighbour_reference(x, 64))
    with pytest.raises(emulator.EmulatorRaceError) as caught:
        kernel.check_race((3,), (64,), (x, y))
    message = str(caught.value)
    assert "left_neighbour_sum" in message and "grid (3, 1, 1) block (64, 1, 1)" in message
    assert "argument 1 (float* __restrict__ y)" in message and "'index order'" in message


def test_the_same_kernel_with_its_barrier_passes_and_keeps_its_results():
    x = np.random.default_rng(1).standard_normal(2 * 128).astype(np.float32)
    y = np.full_like(x, 7.0)
    neighbour_kernel(barrier=True).check_race((2,), (128,), (x, y))
    np.testing.assert_array_equal(y, neighbour_reference(x, 128))


def test_a_race_between_blocks_is_found():
    out = np.zeros(1, dtype=np.int32)
    kernel = emulator.RawKernel(BLOCK_RACE, "last_block_wins")
    kernel((8,), (32,), (out,))
    assert out[0] == 7                               # blocks in index order: the last wins
    with pytest.raises(emulator.EmulatorRaceError, match="last_block_wins"):
        kernel.check_race((8,), (32,), (out,))


def test_race_mode_routes_every_launch_through_the_schedules(monkeypatch):
    monkeypatch.setattr(emulator, "RACE_CHECK", True)
    x = np.ones(64, dtype=np.float32)
    with pytest.raises(emulator.EmulatorRaceError):
        neighbour_kernel(barrier=False)((1,), (64,), (x, np.empty_like(x)))


# ------------------------------------------------------------------ every kernel version

@pytest.fixture()
def race_backend(monkeypatch):
    monkeypatch.setattr(emulator, "RACE_CHECK", True)
    return KernelBackend(EmulatorLauncher())


def close(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    error = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)
    assert error < 1e-4, f"{what}: relative error {error:.1e}"  # float32 sums in another order


def test_every_conv_version_is_race_free(race_backend):
    # Small, ragged in every tile dimension; two images so blocks span image borders.
    rng = np.random.default_rng(2)
    N, Cin, Cout, H, W = 2, 5, 7, 9, 7
    x = rng.standard_normal((N, Cin, H, W)).astype(np.float32)
    w = (rng.standard_normal((Cout, Cin, 3, 3)) / 6).astype(np.float32)
    b = rng.standard_normal(Cout).astype(np.float32)
    dy = rng.standard_normal((N, Cout, H, W)).astype(np.float32)
    ref = NumpyBackend(np.float64)
    y_ref, ref_cache = ref.conv_forward(*(a.astype(np.float64) for a in (x, w, b)), True, True)
    dx_ref, dw_ref, db_ref = ref.conv_backward(dy.astype(np.float64), ref_cache)
    kb = race_backend
    xd, wd, bd, dyd = (kb.asarray(a) for a in (x, w, b, dy))
    cache = None
    for version in sorted(CONV_FORWARD_TILES):
        y, cache = kb.conv_forward(xd, wd, bd, True, True, version=version)
        close(kb.to_host(y), y_ref, f"forward v{version}")
    for version in sorted(CONV_BACKWARD_DATA_TILES):
        dx, _, _ = kb.conv_backward(dyd, cache, need_dw=False, data_version=version)
        close(kb.to_host(dx), dx_ref, f"backward data v{version}")
    for version, tile in sorted(CONV_BACKWARD_WEIGHT_TILES.items()):
        # Split-K forced (one K-slice of pixels per split) where the tile allows it, so the
        # partial sums and their reduction run too.
        kb.split_k_min_chunk = tile.bk if tile else KernelBackend.split_k_min_chunk
        for bias_version in CONV_BACKWARD_BIAS_VERSIONS:
            _, dw, db = kb.conv_backward(dyd, cache, need_dx=False, weight_version=version,
                                         bias_version=bias_version)
            close(kb.to_host(dw), dw_ref, f"backward weight v{version}")
            close(kb.to_host(db), db_ref, f"backward bias v{bias_version}")


def test_every_other_kernel_is_race_free(race_backend):
    rng = np.random.default_rng(3)
    kb = race_backend
    ref = NumpyBackend(np.float64)
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    y, cache = kb.maxpool_forward(kb.asarray(x))
    y_ref, ref_cache = ref.maxpool_forward(x.astype(np.float64))
    close(kb.to_host(y), y_ref, "maxpool")
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    close(kb.to_host(kb.maxpool_backward(kb.asarray(dy), cache)),
          ref.maxpool_backward(dy.astype(np.float64), ref_cache), "maxpool backward")
    u, ucache = kb.upsample_forward(kb.asarray(x))
    du = rng.standard_normal(u.shape).astype(np.float32)
    close(kb.to_host(kb.upsample_backward(kb.asarray(du), ucache)),
          ref.upsample_backward(du.astype(np.float64), ref.upsample_forward(x.astype(np.float64))[1]),
          "upsample backward")
    feat = (rng.standard_normal((2, 4, 11, 13)) * 2 + 3).astype(np.float32)
    mean_ref, std_ref = ref.mean_std(feat.astype(np.float64))
    for version in INSTANCE_STATS_VERSIONS:
        mean, std = kb.mean_std(kb.asarray(feat), version=version)
        close(kb.to_host(mean), mean_ref, f"mean v{version}")
        close(kb.to_host(std), std_ref, f"std v{version}")
    dmean, dstd = (rng.standard_normal((2, 4, 1, 1)).astype(np.float32) for _ in range(2))
    close(kb.to_host(kb.mean_std_backward(kb.asarray(dmean), kb.asarray(dstd), kb.asarray(feat),
                                          mean, std)),
          ref.mean_std_backward(dmean.astype(np.float64), dstd.astype(np.float64),
                                feat.astype(np.float64), mean_ref, std_ref), "mean/std backward")
    t, _ = kb.adain_forward(kb.asarray(feat), kb.asarray(dmean), kb.asarray(np.abs(dstd)), 0.7)
    t_ref, _ = ref.adain_forward(feat.astype(np.float64), dmean.astype(np.float64),
                                 np.abs(dstd).astype(np.float64), 0.7)
    close(kb.to_host(t), t_ref, "adain")
    param = rng.standard_normal((5, 3)).astype(np.float32)
    grad = rng.standard_normal((5, 3)).astype(np.float32)
    p_kb, m_kb, v_kb = (kb.asarray(a) for a in (param, np.zeros_like(param), np.zeros_like(param)))
    kb.adam_step(p_kb, kb.asarray(grad), m_kb, v_kb, 1e-2, 0.9, 0.999, 1e-8, 1)
    p_ref, m_ref, v_ref = param.astype(np.float64), np.zeros((5, 3)), np.zeros((5, 3))
    ref.adam_step(p_ref, grad.astype(np.float64), m_ref, v_ref, 1e-2, 0.9, 0.999, 1e-8, 1)
    close(kb.to_host(p_kb) - param, p_ref - param, "adam")
