"""Tests of the CPU emulator for CUDA kernels (adain_np/cuda/emulator.py).

Every kernel is written here; expected values come from NumPy.
"""

import json
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from adain_np.cuda.emulator import (EmulatorCompileError, EmulatorLaunchError,
                               EmulatorMemoryError, RawKernel)

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the emulator needs g++")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Builds into a fresh cache, so the compile path itself is tested."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAIN_NP_EMU_CACHE", str(tmp_path_factory.mktemp("emu_cache")))
        mp.delenv("ADAIN_NP_EMU_ASAN", raising=False)
        yield


def kernel(code: str, name: str, **kwargs) -> RawKernel:
    return RawKernel(textwrap.dedent(code), name, filename=f"kernels/{name}.cu", **kwargs)


VECTOR_ADD = r"""
extern "C" __global__ void vector_add(const float* __restrict__ a, const float* __restrict__ b,
                                      float* __restrict__ out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = a[i] + b[i];
}
"""


def test_vector_add_with_grid_larger_than_needed():
    rng = np.random.default_rng(0)
    n = 1000
    a, b = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    out = np.full(n + 24, -7.0, np.float32)  # the tail must stay untouched
    kernel(VECTOR_ADD, "vector_add")((8,), (128,), (a, b, out[:n], np.int32(n)))
    np.testing.assert_array_equal(out[:n], a + b)  # one float add: exact on CPU and GPU
    np.testing.assert_array_equal(out[n:], -7.0)


TREE_SUM = r"""
extern "C" __global__ void tree_sum(const float* x, float* block_sums, int n) {
  __shared__ float s[256];
  int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) block_sums[blockIdx.x] = s[0];
}
"""

SHUFFLE_SUM = r"""
__device__ __forceinline__ float warp_sum(float v) {
  #pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

extern "C" __global__ void shuffle_sum(const float* x, float* block_sums, int n) {
  __shared__ float warp_sums[32];
  int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  float v = warp_sum(i < n ? x[i] : 0.0f);
  if (t % 32 == 0) warp_sums[t / 32] = v;
  __syncthreads();
  if (t < 32) {
    v = warp_sum(t < blockDim.x / 32 ? warp_sums[t] : 0.0f);
    if (t == 0) block_sums[blockIdx.x] = v;
  }
}
"""


@pytest.mark.parametrize("code,name", [(TREE_SUM, "tree_sum"), (SHUFFLE_SUM, "shuffle_sum")])
def test_block_reduction_matches_numpy(code, name):
    rng = np.random.default_rng(1)
    blocks, n = 37, 37 * 256 - 100  # last block partly empty
    x = rng.standard_normal(n).astype(np.float32)
    sums = np.zeros(blocks, np.float32)
    kernel(code, name)((blocks,), (256,), (x, sums, np.int32(n)))
    expected = np.add.reduceat(x.astype(np.float64), np.arange(0, n, 256))
    # float32 sums of 256 terms of size ~1 in a different order than NumPy's.
    np.testing.assert_allclose(sums, expected, rtol=0, atol=1e-4)


def test_early_exit_counts_as_arrived_at_barrier():
    code = r"""
    extern "C" __global__ void reverse_first(const float* x, float* out, int n) {
      __shared__ float s[128];
      int t = threadIdx.x;
      if (t >= n) return;  // these threads never reach the barrier
      s[t] = x[t];
      __syncthreads();
      out[t] = s[n - 1 - t];
    }
    """
    x = np.arange(128, dtype=np.float32)
    out = np.zeros(100, np.float32)
    kernel(code, "reverse_first")(1, 128, (x, out, np.int32(100)))
    np.testing.assert_array_equal(out, x[:100][::-1])


def test_dynamic_shared_memory_and_its_limit():
    code = r"""
    extern "C" __global__ void reverse_blocks(const float* x, float* out) {
      extern __shared__ float buffer[];
      int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
      buffer[t] = x[i];
      __syncthreads();
      out[i] = buffer[blockDim.x - 1 - t];
    }
    """
    k = kernel(code, "reverse_blocks")
    x = np.arange(4 * 256, dtype=np.float32)
    out = np.zeros_like(x)
    k((4,), (256,), (x, out), shared_mem=256 * 4)
    np.testing.assert_array_equal(out, x.reshape(4, 256)[:, ::-1].ravel())
    # As on the GPU, more than 48 KiB needs the attribute raised first.
    with pytest.raises(EmulatorLaunchError, match="max_dynamic_shared_size_bytes"):
        k((4,), (256,), (x, out), shared_mem=64 * 1024)
    k.max_dynamic_shared_size_bytes = 64 * 1024
    out[:] = 0
    k((4,), (256,), (x, out), shared_mem=64 * 1024)
    np.testing.assert_array_equal(out, x.reshape(4, 256)[:, ::-1].ravel())


def test_atomics_across_blocks():
    code = r"""
    extern "C" __global__ void histogram(const int* values, int n, int* counts,
                                         float* total, unsigned int* visits, int* largest) {
      int i = blockIdx.x * blockDim.x + threadIdx.x;
      atomicAdd(visits, 1u);
      if (i >= n) return;
      atomicAdd(&counts[values[i]], 1);
      atomicAdd(total, 0.5f);
      atomicMax(largest, values[i] * 1000 + i % 1000);
    }
    """
    rng = np.random.default_rng(2)
    n = 5000
    values = rng.integers(0, 10, n).astype(np.int32)
    counts = np.zeros(10, np.int32)
    total = np.zeros(1, np.float32)
    visits = np.zeros(1, np.uint32)
    largest = np.full(1, -1, np.int32)
    kernel(code, "histogram")(40, 128, (values, np.int32(n), counts, total, visits, largest))
    np.testing.assert_array_equal(counts, np.bincount(values, minlength=10))
    assert total[0] == 0.5 * n  # sums of halves are exact in float32 up to 2**24
    assert visits[0] == 40 * 128
    assert largest[0] == (values * 1000 + np.arange(n) % 1000).max()


def test_3d_grid_and_block_indices():
    code = r"""
    extern "C" __global__ void record_indices(int* out) {
      int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
      int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
      int slot = bx * blockDim.x * blockDim.y * blockDim.z + tx;
      out[4 * slot + 0] = blockIdx.x * 100 + blockIdx.y * 10 + blockIdx.z;
      out[4 * slot + 1] = threadIdx.x * 100 + threadIdx.y * 10 + threadIdx.z;
      out[4 * slot + 2] = gridDim.x * 100 + gridDim.y * 10 + gridDim.z;
      out[4 * slot + 3] = blockDim.x * 100 + blockDim.y * 10 + blockDim.z;
    }
    """
    grid, block = (3, 2, 4), (5, 3, 2)
    out = np.zeros((4, 2, 3, 2, 3, 5, 4), np.int32)  # (gz, gy, gx, tz, ty, tx, field)
    kernel(code, "record_indices")(grid, block, (out,))
    gz, gy, gx, tz, ty, tx = np.indices(out.shape[:6])
    np.testing.assert_array_equal(out[..., 0], gx * 100 + gy * 10 + gz)
    np.testing.assert_array_equal(out[..., 1], tx * 100 + ty * 10 + tz)
    assert (out[..., 2] == 324).all() and (out[..., 3] == 532).all()


def test_missing_barrier_reads_poisoned_shared_memory():
    code = r"""
    extern "C" __global__ void mirror(float* out, int* iout) {
      __shared__ float s[256];
      __shared__ int si[256];
      int t = threadIdx.x;
      s[t] = (float)t;
      si[t] = t;
      // BUG (on purpose): no __syncthreads() before reading other threads' slots.
      out[t] = s[255 - t];
      iout[t] = si[255 - t];
    }
    """
    out = np.zeros(256, np.float32)
    iout = np.zeros(256, np.int32)
    kernel(code, "mirror")(1, 256, (out, iout))
    # Threads run in order up to a barrier, so the first half read slots not
    # yet written: the poison (0xFF bytes) shows, not a plausible value.
    assert np.isnan(out[:128]).all()
    assert (iout[:128] == -1).all()
    np.testing.assert_array_equal(out[128:], np.arange(127, -1, -1))


DEADLOCK_SCRIPT = r"""
import json, numpy as np
from adain_np.cuda.emulator import RawKernel, EmulatorDeadlockError
kernels = {
    "exited_lanes": '''extern "C" __global__ void exited_lanes(float* x) {
  float v = x[threadIdx.x];
  if (threadIdx.x < 16) v = __shfl_down_sync(0xffffffffu, v, 1);
  x[threadIdx.x] = v;
}''',
    "two_call_sites": '''extern "C" __global__ void two_call_sites(float* x) {
  float v = x[threadIdx.x];
  if (threadIdx.x % 2) v = __shfl_xor_sync(0xffffffffu, v, 1);
  else v = __shfl_xor_sync(0xffffffffu, v, 1);
  x[threadIdx.x] = v;
}''',
    "barrier_vs_shuffle": '''extern "C" __global__ void barrier_vs_shuffle(float* x) {
  if (threadIdx.x < 16) __syncthreads();
  else x[threadIdx.x] = __shfl_sync(0xffffffffu, x[threadIdx.x], 0);
}''',
}
messages = {}
for name, code in kernels.items():
    try:
        RawKernel(code, name, filename=f"kernels/{name}.cu")(1, 64, (np.zeros(64, np.float32),))
        messages[name] = None
    except EmulatorDeadlockError as e:
        messages[name] = str(e)
print(json.dumps(messages))
"""


def test_divergent_shuffles_and_barriers_raise_deadlock():
    # In a subprocess with a timeout: a bug in deadlock detection must not hang the suite.
    proc = subprocess.run([sys.executable, "-c", DEADLOCK_SCRIPT], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    messages = json.loads(proc.stdout.strip().splitlines()[-1])
    exited = messages["exited_lanes"]
    assert "'exited_lanes' deadlocked in block (0,0,0)" in exited
    assert "threads 0-15: wait at __shfl_down_sync (kernels/exited_lanes.cu:3" in exited
    assert "threads 16-63: exited" in exited
    sites = messages["two_call_sites"]
    assert "divergent warp collective" in sites
    assert "kernels/two_call_sites.cu:3" in sites and "kernels/two_call_sites.cu:4" in sites
    mixed = messages["barrier_vs_shuffle"]
    assert "threads 0-15: wait at __syncthreads (kernels/barrier_vs_shuffle.cu:2)" in mixed
    assert "threads 16-31: wait at __shfl_sync (kernels/barrier_vs_shuffle.cu:3" in mixed
    assert "threads 32-63: exited" in mixed  # warp 1 completed its shuffle


def test_argument_checks():
    k = kernel(VECTOR_ADD, "vector_add")
    a = np.zeros(10, np.float32)
    with pytest.raises(TypeError, match=r"argument 3 \(int n\).*Python int.*np\.int32"):
        k(1, 32, (a, a, a, 10))
    with pytest.raises(TypeError, match="takes 4 arguments"):
        k(1, 32, (a, a, a))
    with pytest.raises(TypeError, match="takes 4 arguments"):
        k(1, 32, (a, a, a, np.int32(10), np.int32(0)))
    with pytest.raises(TypeError, match=r"argument 0 .*float64.*np\.float32"):
        k(1, 32, (a.astype(np.float64), a, a, np.int32(10)))
    with pytest.raises(TypeError, match=r"argument 3 .*float32"):
        k(1, 32, (a, a, a, np.float32(10)))
    with pytest.raises(ValueError, match="C-contiguous"):
        k(1, 32, (np.zeros(20, np.float32)[::2], a, a, np.int32(10)))
    with pytest.raises(EmulatorLaunchError, match="too large"):
        k(1, 2048, (a, a, a, np.int32(10)))


def test_compile_error_names_file_and_line():
    code = "extern \"C\" __global__ void broken(float* x) {\n  int i = threadIdx.x;\n  x[i] = undefined_name;\n}\n"
    with pytest.raises(EmulatorCompileError) as info:
        kernel(code, "broken")(1, 1, (np.zeros(1, np.float32),))
    assert "kernels/broken.cu:3:" in str(info.value)
    assert "undefined_name" in str(info.value)


OFF_BY_ONE = r"""
extern "C" __global__ void scale(const float* x, float* out, int n, int limit) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i > limit) return;  // limit = n - 1 is correct, limit = n writes one past the end
  out[i] = 2.0f * x[min(i, n - 1)];
}
"""


def test_sanitizer_catches_one_element_overrun():
    k = kernel(OFF_BY_ONE, "scale", sanitize=True)
    n = 100
    x = np.arange(n, dtype=np.float32)
    out = np.zeros(n, np.float32)
    k((2,), (64,), (x, out, np.int32(n), np.int32(n - 1)))
    np.testing.assert_array_equal(out, 2 * x)  # results come back from the subprocess
    with pytest.raises(EmulatorMemoryError) as info:
        k((2,), (64,), (x, out, np.int32(n), np.int32(n)))
    message = str(info.value)
    assert "heap-buffer-overflow" in message and "WRITE of size 4" in message
    assert "argument out" in message and "kernels/scale.cu:5" in message


def test_launch_time_64_blocks_of_256_threads(capsys):
    code = r"""
    extern "C" __global__ void reverse_in_block(const float* x, float* y) {
      __shared__ float s[256];
      int i = blockIdx.x * blockDim.x + threadIdx.x;
      s[threadIdx.x] = x[i];
      __syncthreads();
      y[i] = s[255 - threadIdx.x];
    }
    """
    k = kernel(code, "reverse_in_block")
    x = np.arange(64 * 256, dtype=np.float32)
    y = np.zeros_like(x)
    k(64, 256, (x, y))  # compiles
    start = time.perf_counter()
    k(64, 256, (x, y))
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nemulator: 64 blocks x 256 threads with a barrier: {seconds * 1e3:.1f} ms")
    np.testing.assert_array_equal(y, x.reshape(64, 256)[:, ::-1].ravel())
    assert seconds < 5.0  # sanity bound only; ~1-20 ms expected
