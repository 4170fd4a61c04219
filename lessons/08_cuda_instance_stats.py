"""Lesson 08: writing a CUDA kernel with RawKernel, the reduction behind instance statistics.

Run:  python lessons/08_cuda_instance_stats.py [--quick] [--out FOLDER]

AdaIN computes a mean and a std for every (image, channel) plane of a feature
map, nine times in each training step's forward pass (the style at four depths,
the content once for AdaIN, the decoded image at four depths for the style loss).
On a GPU that is a REDUCTION: many numbers in, two out. This lesson reads the two kernels of kernels/instance_stats.cu, runs
them, and steps through what one thread block of the fast one does.

How the kernels run:
  - With a CUDA GPU and CuPy, through ``cupy.RawKernel(source, name)``: CuPy
    compiles the C++ source with NVRTC and launches it on the device.
  - Without one (this lesson's default case), through ``adain_np.cuda.emulator.RawKernel``,
    which has the same call, ``kernel(grid, block, args)``, but compiles the SAME
    source with g++ and runs every CUDA thread as a fiber on the CPU. Results match
    a GPU's up to rounding; timings say nothing about a GPU's speed.

CUDA in four lines: a launch runs a GRID of BLOCKS; a block is up to 1024 THREADS that
can share fast on-chip memory (``__shared__``) and wait for each other
(``__syncthreads``); threads run in WARPS of 32 that execute together and can swap
registers directly (``__shfl_xor_sync``); each thread knows its ``blockIdx`` and ``threadIdx``.

Then it breaks a copy of the kernel three ways and shows what the emulator reports
(NaN from poisoned shared memory, a deadlock listing each thread's wait site, printf by
barrier phase), plants a race that a plain launch hides, and catches it with the
emulator's race finder, which reruns a launch under other thread and block orders.

Prints: the launch shapes, each thread's, each warp's and the block's partial results
for one plane, checked against NumPy; why the kernel uses Welford's update; the broken
kernels' outputs and the emulator's reports.
Draws: 08_butterfly.png, 08_block_partials.png.
Check: both kernels against torch's var/mean on encoder features (or NumPy float64).
"""
import re
import sys

from _common import Lesson, heading, import_torch, plt, rel_error, run

import numpy as np

import adain_np
from adain_np.cuda import emulator, gpu
from adain_np.images import load_image, resize_exact, sample_path, to_tensor
from adain_np.cuda.source import kernel_source

# %% ----------------------------------------------------------------------------------
# A traced copy of instance_mean_std_v2: the same steps, for one plane, with every
# intermediate result written out to arrays we can print. It is appended to the real
# kernels/instance_stats.cu, so it uses that file's Welford struct and welford_merge.

TRACED_KERNEL = r"""
extern "C" __global__ void instance_mean_std_traced(const float* __restrict__ plane,
                                                    float* __restrict__ thread_state,  // (blockDim, 3)
                                                    float* __restrict__ lane_counts,   // (5, blockDim)
                                                    float* __restrict__ warp_state,    // (nwarps, 3)
                                                    float* __restrict__ result,        // (2,)
                                                    int L, float eps)
{
    __shared__ float warp_count[32], warp_mean[32], warp_m2[32];
    const int t = threadIdx.x;

    // Step 1: each thread walks the plane with stride blockDim.x (thread t reads t, t+B, ...).
    Welford s = {0.f, 0.f, 0.f};
    for (int i = t; i < L; i += blockDim.x) {
        const float v = plane[i];
        s.count += 1.f;
        const float d = v - s.mean;
        s.mean += d / s.count;
        s.m2 = fmaf(d, v - s.mean, s.m2);
    }
    thread_state[3 * t + 0] = s.count;
    thread_state[3 * t + 1] = s.mean;
    thread_state[3 * t + 2] = s.m2;

    // Step 2: the warp's 32 partial results are merged by a butterfly of xor-shuffles:
    // at offset 16 lane i swaps with lane i^16, then 8, 4, 2, 1. After 5 steps every lane
    // holds the merge of all 32. (welford_warp_merge in the .cu file, unrolled to trace it.)
    int stage = 0;
    for (int offset = 16; offset > 0; offset >>= 1, ++stage) {
        Welford o;
        o.count = __shfl_xor_sync(0xffffffffu, s.count, offset);
        o.mean = __shfl_xor_sync(0xffffffffu, s.mean, offset);
        o.m2 = __shfl_xor_sync(0xffffffffu, s.m2, offset);
        s = welford_merge(s, o);
        lane_counts[stage * blockDim.x + t] = s.count;
    }

    // Step 3: lane 0 of each warp publishes the warp's result in shared memory; after the
    // barrier, warp 0 merges the (up to 32) warp results with the same butterfly.
    const int lane = t % 32;
    const int warp = t / 32;
    if (lane == 0) {
        warp_count[warp] = s.count;
        warp_mean[warp] = s.mean;
        warp_m2[warp] = s.m2;
        warp_state[3 * warp + 0] = s.count;
        warp_state[3 * warp + 1] = s.mean;
        warp_state[3 * warp + 2] = s.m2;
    }
    __syncthreads();
    if (warp == 0) {
        const int nwarps = blockDim.x / 32;
        Welford w = {0.f, 0.f, 0.f};
        if (lane < nwarps) {
            w.count = warp_count[lane];
            w.mean = warp_mean[lane];
            w.m2 = warp_m2[lane];
        }
        w = welford_warp_merge(w);
        if (lane == 0) {
            result[0] = w.mean;
            result[1] = sqrtf(w.m2 / (float)(L - 1) + eps);
        }
    }
}
"""


class Device:
    """The GPU through CuPy when there is one, else the CPU emulator: same kernels, same calls."""

    def __init__(self):
        ok, reason = gpu.gpu_available()
        self.on_gpu = ok
        if ok:
            import cupy
            self.xp, self.description = cupy, f"GPU: {reason}"
            self.raw_kernel = lambda code, name: cupy.RawKernel(code, name, options=("-std=c++17",))
            self.to_host = cupy.asnumpy
        else:
            self.xp, self.description = np, f"CPU emulator (no GPU: {reason})"
            self.raw_kernel = lambda code, name: emulator.RawKernel(
                code, name, filename="kernels/instance_stats.cu")
            self.to_host = np.asarray

    def array(self, host):
        return self.xp.asarray(np.ascontiguousarray(host, dtype=np.float32))

    def empty(self, shape):
        return self.xp.empty(shape, dtype=np.float32)


def kernel_excerpt(source, name):
    """The text of one kernel in the source, from its signature to its closing brace."""
    start = source.index(f"void {name}(")
    start = source.rindex("extern", 0, start)
    end = re.search(r"\n}\n", source[start:]).end()
    return source[start:start + end]


def welford_numpy(values):
    """(count, mean, M2) of values in float64: the exact answer a partial result should hold."""
    values = np.asarray(values, dtype=np.float64)
    return len(values), values.mean(), float(np.sum((values - values.mean()) ** 2))


def main():
    lesson = Lesson(__doc__)
    device = Device()
    print(f"running kernels on: {device.description}")
    source = kernel_source("instance_stats.cu")                     # kernels/instance_stats.cu
    eps = 1e-5

    # %% ------------------------------------------------------------------------------
    # 1. The simplest kernel: one thread per plane. Thread nc sums its plane, divides,
    # then sums squared deviations: two passes, exactly the formula.
    heading("1. instance_mean_std_v1: one thread per plane")
    print(kernel_excerpt(source, "instance_mean_std_v1"))
    # Real data: relu1_1 features of a bundled image through the (random, seeded) VGG.
    size = 32 if lesson.quick else 96
    image = to_tensor(resize_exact(load_image(sample_path("coffee")), (size, size)))[None]
    net = adain_np.Net(adain_np.init_vgg_params(seed=0), adain_np.init_decoder_params(seed=0))
    feat = net.encode_with_intermediate(image)[0]                    # (1, 64, size, size) relu1_1
    N, C, H, W = feat.shape
    NC, L = N * C, H * W
    x = device.array(feat)
    mean_v1, std_v1 = device.empty((NC,)), device.empty((NC,))
    v1 = device.raw_kernel(source, "instance_mean_std_v1")
    block = 128
    grid = (NC + block - 1) // block
    # Scalars must have the C types of the parameters: np.int32 for int, np.float32 for
    # float. (CuPy would pass a Python int as 64 bits; the kernel would read garbage.)
    v1((grid,), (block,), (x, mean_v1, std_v1, np.int32(NC), np.int32(L), np.float32(eps)))
    print(f"features {feat.shape}: NC = {NC} planes of L = {L}; launched grid {grid} x block {block}"
          f" -> {grid * block} threads, {grid * block - NC} of them idle (nc >= NC returns at once)")
    # This kernel is correct but slow on a GPU: only NC threads work (a GPU wants tens of
    # thousands), and at each step the 32 threads of a warp read addresses L floats apart,
    # so every read is a separate memory transaction instead of one coalesced 128-byte load.

    # %% ------------------------------------------------------------------------------
    # 2. The fast kernel: one BLOCK per plane, 256 threads cooperating. Threads read
    # consecutive addresses (coalesced), each keeps a running (count, mean, M2), and the
    # partial results are merged in a tree. Here one plane, traced step by step.
    heading("2. instance_mean_std_v2, one block traced")
    traced = device.raw_kernel(source + TRACED_KERNEL, "instance_mean_std_traced")
    block = 128                                                      # 4 warps, to keep the print short
    L_demo = 1000 if lesson.quick else 5000                          # not a multiple of 128, on purpose
    rng = np.random.default_rng(0)
    plane = (rng.standard_normal(L_demo) * 2 + 5).astype(np.float32) # (L,)
    thread_state = device.empty((block, 3))
    lane_counts = device.empty((5, block))
    warp_state = device.empty((block // 32, 3))
    result = device.empty((2,))
    traced((1,), (block,), (device.array(plane), thread_state, lane_counts, warp_state, result,
                            np.int32(L_demo), np.float32(eps)))
    thread_state, lane_counts, warp_state, result = (
        device.to_host(a) for a in (thread_state, lane_counts, warp_state, result))

    print(f"plane of L = {L_demo}, block of {block} threads = {block // 32} warps")
    print("step 1, each thread's running (count, mean, M2) over plane[t::128]:")
    worst_thread = 0.0
    for t in range(block):
        count, mean, m2 = welford_numpy(plane[t::block])
        worst_thread = max(worst_thread, abs(thread_state[t, 1] - mean) / abs(mean),
                           abs(thread_state[t, 2] - m2) / m2, abs(thread_state[t, 0] - count))
        if t in (0, 1, L_demo % block - 1, L_demo % block, block - 1):
            print(f"  thread {t:>3}: count {thread_state[t, 0]:.0f}, mean {thread_state[t, 1]:.5f}, "
                  f"M2 {thread_state[t, 2]:9.4f}   numpy: {count}, {mean:.5f}, {m2:9.4f}")
    print(f"  ({L_demo} = {L_demo // block}*{block} + {L_demo % block}: threads 0..{L_demo % block - 1} "
          f"get {L_demo // block + 1} values, the others {L_demo // block})")
    print("step 2, the xor butterfly in warp 0: how many values lane 0..7 has merged after each step")
    for stage, offset in enumerate((16, 8, 4, 2, 1)):
        print(f"  offset {offset:>2}: {lane_counts[stage, :8].astype(int)} ...")
    print("step 3, each warp's merged result (lane 0 writes it to shared memory):")
    worst_warp = 0.0
    for w in range(block // 32):
        values = np.concatenate([plane[t::block] for t in range(32 * w, 32 * w + 32)])
        count, mean, m2 = welford_numpy(values)
        worst_warp = max(worst_warp, abs(warp_state[w, 1] - mean) / abs(mean), abs(warp_state[w, 2] - m2) / m2)
        print(f"  warp {w}: count {warp_state[w, 0]:.0f}, mean {warp_state[w, 1]:.5f}, "
              f"M2 {warp_state[w, 2]:10.3f}   numpy: {count}, {mean:.5f}, {m2:10.3f}")
    ref_mean = plane.astype(np.float64).mean()
    ref_std = np.sqrt(plane.astype(np.float64).var(ddof=1) + eps)
    print(f"block result: mean {result[0]:.6f} std {result[1]:.6f}   "
          f"numpy float64: {ref_mean:.6f} {ref_std:.6f}")

    # Why Welford's running update instead of summing x and x^2 in one pass and using
    # var = (sum(x^2) - sum(x)^2 / L) / (L - 1)? Because in float32 that subtracts two large,
    # nearly equal numbers. Feature maps after a ReLU often sit far from 0 with a small
    # spread; here data with mean 1000 and std 0.1, summed one value at a time like a thread:
    heading("why Welford: one-pass sums cancel in float32")
    shifted = (1000 + 0.1 * rng.standard_normal(4096)).astype(np.float32)
    s1 = np.cumsum(shifted, dtype=np.float32)[-1]                    # sequential float32 sums
    s2 = np.cumsum(shifted * shifted, dtype=np.float32)[-1]
    naive_var = (s2 - s1 * s1 / np.float32(len(shifted))) / np.float32(len(shifted) - 1)
    true_var = shifted.astype(np.float64).var(ddof=1)
    count, mean, m2 = 0.0, np.float32(0), np.float32(0)              # Welford, in float32
    for v in shifted:
        count += 1
        d = v - mean
        mean = np.float32(mean + d / np.float32(count))
        m2 = np.float32(m2 + d * (v - mean))
    print(f"true variance {true_var:.3e}; float32 sum-of-squares formula {naive_var:.3e}; "
          f"float32 Welford {m2 / (len(shifted) - 1):.3e}")

    # %% ------------------------------------------------------------------------------
    # 3. The full-size launch of the real v2 on the relu1_1 features: grid = NC blocks.
    heading("3. instance_mean_std_v2 on all planes")
    v2 = device.raw_kernel(source, "instance_mean_std_v2")
    mean_v2, std_v2 = device.empty((NC,)), device.empty((NC,))
    v2((NC,), (256,), (x, mean_v2, std_v2, np.int32(NC), np.int32(L), np.float32(eps)))
    mean_v1, std_v1, mean_v2, std_v2 = (device.to_host(a) for a in (mean_v1, std_v1, mean_v2, std_v2))
    print(f"grid {NC} blocks x 256 threads; first channels' std: v1 {np.round(std_v1[:4], 5)}, "
          f"v2 {np.round(std_v2[:4], 5)}")
    if device.on_gpu:
        # Timings only mean something on a GPU. A larger tensor, so the launch is not all overhead.
        cupy = device.xp
        big = cupy.random.standard_normal((8 * 64, 128 * 128), dtype=cupy.float32)
        m, s = device.empty((8 * 64,)), device.empty((8 * 64,))
        for name, kernel, grid_b, block_b in (("v1", v1, ((8 * 64 + 127) // 128,), (128,)),
                                              ("v2", v2, (8 * 64,), (256,))):
            args = (big, m, s, np.int32(8 * 64), np.int32(128 * 128), np.float32(eps))
            kernel(grid_b, block_b, args)
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(20):
                kernel(grid_b, block_b, args)
            end.record()
            end.synchronize()
            ms = cupy.cuda.get_elapsed_time(start, end) / 20
            print(f"{name} on 8x64x128x128: {ms:.3f} ms, {big.nbytes / ms / 1e6:.0f} GB/s read")

    # %% ------------------------------------------------------------------------------
    # 4. Break the kernel and watch the emulator catch it. Three copies of the real v2,
    # each changed in one place, run on the CPU emulator (these need the emulator's
    # poisoned shared memory and its barrier bookkeeping; a GPU fails silently instead).
    heading("4. break the kernel: three edits to a copy of instance_mean_std_v2, and a race")
    broken = None
    if device.on_gpu:
        print("(skipped on a GPU: run without one to see the emulator's diagnostics)")
    else:
        broken = break_the_kernel(source, plane_count=4)

    # %% ------------------------------------------------------------------------------
    # Figures.
    draw_butterfly(lesson, thread_state, lane_counts)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    # Bars measured from the plane's mean (up when a partial is above it), with the
    # limits set by the data so no bar is cut off.
    deviations = thread_state[:, 1] - ref_mean
    axes[0].bar(range(block), deviations, bottom=ref_mean, color="C0", width=1.0)
    axes[0].axhline(ref_mean, color="C3", label=f"plane mean {ref_mean:.3f}")
    axes[0].set_xlabel("thread")
    axes[0].set_ylabel("partial mean")
    pad = 0.1 * np.max(np.abs(deviations))
    axes[0].set_ylim(ref_mean + deviations.min() - pad, ref_mean + deviations.max() + pad)
    axes[0].set_title("step 1: each thread's mean over its strided share")
    axes[0].legend(loc="best")
    warp_dev = warp_state[:, 1] - ref_mean
    axes[1].bar(range(block // 32), warp_dev, bottom=ref_mean, color="C2")
    axes[1].axhline(ref_mean, color="C3")
    axes[1].axhline(result[0], color="k", ls="--", label=f"block result {result[0]:.3f}")
    pad = 0.2 * max(np.max(np.abs(warp_dev)), 1e-6)
    axes[1].set_ylim(ref_mean + min(warp_dev.min(), 0) - pad, ref_mean + max(warp_dev.max(), 0) + pad)
    axes[1].set_xticks(range(block // 32))
    axes[1].set_xlabel("warp")
    axes[1].set_title("steps 2-3: each warp's merged mean, then the block's")
    axes[1].legend(loc="best")
    fig.tight_layout()
    lesson.save_figure(fig, "08_block_partials.png")

    # %% ------------------------------------------------------------------------------
    # Checks. The kernels accumulate in float32 in their own order; the references sum in
    # float64 (or torch's float32, pairwise). v2 merges in a tree, so its rounding error grows
    # like log(L) and stays ~1e-7 of the result. v1 adds L values one after another in one
    # thread, and a sequential float32 sum can be off by up to ~L * 6e-8 (each addition
    # rounds once): that, not 1e-5, is the honest bound for v1 -- and a second reason the
    # fast kernel is the one in use. An indexing or merge error shows up at 1e-2 or more.
    heading("checks")
    lesson.check("traced block: worst thread partial vs numpy (relative)", worst_thread, 1e-4)
    lesson.check("traced block: worst warp partial vs numpy (relative)", worst_warp, 1e-4)
    lesson.check("traced block: |std - numpy float64| / std", abs(result[1] - ref_std) / ref_std, 1e-4)
    torch = import_torch()
    if torch is not None:
        from torch_reference import calc_mean_std
        ref_mean_t, ref_std_t = (a.numpy().ravel() for a in calc_mean_std(torch.from_numpy(feat)))
        label = "torch"
    else:
        flat = feat.reshape(NC, L).astype(np.float64)
        ref_mean_t, ref_std_t = flat.mean(axis=1), np.sqrt(flat.var(axis=1, ddof=1) + eps)
        label = "numpy float64"
    sequential_bound = max(1e-5, L * 2.0 ** -24)
    for name, m, s, tol in (("v1", mean_v1, std_v1, sequential_bound), ("v2", mean_v2, std_v2, 1e-5)):
        lesson.check(f"{name} mean: max |kernel - {label}| / max |{label}|", rel_error(m, ref_mean_t), tol)
        lesson.check(f"{name} std: max |kernel - {label}| / max |{label}|", rel_error(s, ref_std_t), tol)
    if broken is not None:
        lesson.check("no barrier: outputs that are not NaN (count of 16: 4 means, 4 stds, 2 runs)",
                     float(broken["finite_outputs"]), 0.5)
        lesson.check("barrier inside if (lane == 0): deadlock reported (0 = yes)",
                     0.0 if broken["deadlock"] else 1.0, 0.5)
        lesson.check("planted race: the plain launch's max |y - numpy| (the order hides it)",
                     broken["plain_error"], 1e-6)
        lesson.check("planted race: check_race reported it (0 = yes)",
                     0.0 if broken["race_found"] else 1.0, 0.5)
    return lesson.finish()


BARRIER = "    }\n    __syncthreads();\n    if (warp == 0) {"   # the one __syncthreads in v2

RACE_KERNEL = r"""
extern "C" __global__ void left_neighbour_sum(const float* __restrict__ x, float* __restrict__ y)
{
    __shared__ float s[128];
    const int t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    BARRIER
    y[blockIdx.x * blockDim.x + t] = s[t] + (t > 0 ? s[t - 1] : 0.f);
}
"""


def capture_c_stdout(fn):
    """Run fn() and return what C code (the kernels' printf) wrote to file descriptor 1."""
    import ctypes
    import os
    import tempfile
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(1)
        os.dup2(captured.fileno(), 1)
        try:
            fn()
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        captured.seek(0)
        return captured.read().decode(errors="replace")


def break_the_kernel(source, plane_count):
    """The three experiments of section 4; returns what the checks need."""
    rng = np.random.default_rng(3)
    planes = rng.standard_normal((plane_count, 1000)).astype(np.float32)   # (NC, L)
    assert source.count(BARRIER) == 1, "instance_stats.cu changed: update BARRIER"

    def launch(code):
        kernel = emulator.RawKernel(code, "instance_mean_std_v2", filename="kernels/instance_stats.cu")
        mean, std = np.empty(plane_count, np.float32), np.empty(plane_count, np.float32)
        kernel((plane_count,), (256,), (planes, mean, std, np.int32(plane_count), np.int32(1000),
                                        np.float32(1e-5)))
        return mean, std

    # (a) Delete the barrier. Lane 0 of each warp writes the warp's partial result to shared
    # memory, and warp 0 then reads all eight. Without __syncthreads nothing makes warp 0
    # wait for the other warps' writes: it reads slots nobody has written yet. On a GPU that
    # is a race (sometimes the writes land first, sometimes not, stale values from the last
    # block on that SM otherwise). The emulator fills shared memory with 0xFF bytes before
    # every block, NaN as a float, and runs warp 0 first, so it reads NaN every time.
    print("(a) the __syncthreads() between the warps' writes and warp 0's reads, deleted:")
    no_barrier = source.replace(BARRIER, "    }\n    if (warp == 0) {")
    runs = [launch(no_barrier) for _ in range(2)]
    for mean, std in runs:
        print(f"    mean {mean}, std {std}")
    finite = sum(int(np.isfinite(m).sum() + np.isfinite(s).sum()) for m, s in runs)
    if finite == 0:
        print("    every output NaN, in both runs: the poison the emulator put in shared memory")

    # (b) The barrier moved inside `if (lane == 0)`: only 8 of the 256 threads reach it.
    # __syncthreads must be reached by every thread of the block (or by none); on a GPU this
    # is undefined behaviour (a hang, or a wrong result). The emulator sees that no thread
    # can move on and raises EmulatorDeadlockError, listing where each thread waits.
    print("(b) the __syncthreads() moved inside if (lane == 0):")
    inside = source.replace(BARRIER, "        __syncthreads();\n    }\n    if (warp == 0) {")
    deadlock = False
    try:
        launch(inside)
    except emulator.EmulatorDeadlockError as err:
        deadlock = True
        lines = str(err).splitlines()
        print("    EmulatorDeadlockError: " + "\n    ".join(lines[:7] + ["..."]))
    if not deadlock:
        print("    no deadlock was reported")

    # (c) printf from chosen threads, to see the barrier separate two phases: before it,
    # lane 0 of each warp writes its warp's count; after it, warp 0 reads them back.
    # Block 0 only, threads chosen by an if; the emulator runs C's printf, and the lesson
    # captures what it writes.
    print("(c) printf from lane 0 of each warp before the barrier, threads 0-2 after it (block 0):")
    traced = source.replace(BARRIER, (
        '        if (blockIdx.x == 0) printf("phase 1 (before the barrier): thread %3d writes '
        'warp_count[%d] = %.0f\\n", threadIdx.x, warp, s.count);\n'
        "    }\n    __syncthreads();\n"
        '    if (blockIdx.x == 0 && threadIdx.x < 3) printf("phase 2 (after the barrier):  thread %3d '
        'reads  warp_count[%d] = %.0f\\n", threadIdx.x, threadIdx.x, warp_count[threadIdx.x]);\n'
        "    if (warp == 0) {"))
    printed = capture_c_stdout(lambda: launch(traced))
    for line in printed.splitlines():
        print("    " + line)
    # (d) A race the plain launch hides. Each thread stages its value in shared memory and
    # adds its LEFT neighbour's, with no barrier between the write and the neighbour's
    # read. The emulator runs threads in index order, so every left neighbour has written
    # before it is read and a plain launch gives the right answer. On a GPU it is a race
    # (warps run in any order). check_race runs the launch again with the threads resumed
    # in reverse and in seeded random orders, and the blocks permuted, and compares the
    # results bit for bit.
    print("(d) a missing barrier between a shared-memory write and the neighbour's read:")
    race = RACE_KERNEL.replace("BARRIER", "")
    x = np.random.default_rng(4).standard_normal(2 * 128).astype(np.float32)
    y = np.empty_like(x)
    racy = emulator.RawKernel(race, "left_neighbour_sum", filename="lesson08_race.cu")
    racy((2,), (128,), (x, y))
    rows = x.reshape(2, 128)
    expected = (rows + np.concatenate([np.zeros((2, 1), np.float32), rows[:, :-1]], axis=1)).ravel()
    plain_error = float(np.max(np.abs(y - expected)))
    print(f"    plain launch: max |y - numpy| = {plain_error:.1e} (the thread order hides the race)")
    race_found = False
    try:
        racy.check_race((2,), (128,), (x, y))
    except emulator.EmulatorRaceError as err:
        race_found = True
        print(f"    check_race: EmulatorRaceError: {err}")
    fixed = emulator.RawKernel(RACE_KERNEL.replace("BARRIER", "__syncthreads();"), "left_neighbour_sum",
                               filename="lesson08_race.cu")
    fixed.check_race((2,), (128,), (x, y))                           # raises if it still races
    print("    with __syncthreads() between the write and the read: every schedule agrees")

    # What the emulator still cannot see. It runs one thread at a time and switches only at
    # barriers, warp collectives and exits, so: no memory model (a missing __threadfence or
    # volatile, writes seen out of order by another block: all invisible, as every write
    # lands at once); no warp-synchronous code (code that relies on a warp's 32 lanes running
    # in lockstep without __syncwarp or a shuffle behaves as 32 independent threads, which is
    # what recent GPUs promise, but a bug that lockstep would hide is not shown either); and
    # no performance (its timings say nothing about a GPU's: coalescing, bank conflicts and
    # occupancy do not exist on it). check_race tries five orders; a race that none of them
    # exposes stays hidden.
    print("the emulator cannot see: the memory model (fences, ordering between blocks), "
          "warp-synchronous code without __syncwarp, performance, or a race no tried order exposes")
    return {"finite_outputs": finite, "deadlock": deadlock, "race_found": race_found,
            "plain_error": plain_error}


def draw_butterfly(lesson, thread_state, lane_counts):
    """Warp 0's xor butterfly: one row per step, a line from lane i^offset to lane i."""
    counts = np.vstack([thread_state[None, :, 0], lane_counts])[:, :32]  # (6, 32) warp 0
    fig, ax = plt.subplots(figsize=(13, 5.2))
    lanes = np.arange(32)
    for step, offset in enumerate((16, 8, 4, 2, 1), start=1):
        for lane in lanes:
            partner = lane ^ offset
            # Lane `lane` receives its partner's partial result at this step.
            ax.plot([partner, lane], [step - 1, step], color="C3" if lane == 0 else "0.75",
                    lw=1.6 if lane == 0 else 0.6, zorder=1)
    for (row, lane), value in np.ndenumerate(counts):
        ax.text(lane, row, int(value), ha="center", va="center", fontsize=7, zorder=3,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="C0", lw=0.6))
    ax.set_yticks(range(6), ["own values", "xor 16", "xor 8", "xor 4", "xor 2", "xor 1"])
    ax.set_ylim(5.5, -0.5)
    ax.set_xlim(-0.8, 31.8)
    ax.set_xticks(range(0, 32, 4))
    ax.set_xlabel("lane of warp 0 (each box: how many values its partial result has merged)")
    ax.set_title("the xor butterfly: at each step lane i merges lane i^offset's partial result "
                 "(red: the lines into lane 0)")
    fig.tight_layout()
    lesson.save_figure(fig, "08_butterfly.png")


# %% [markdown]
# What to try
# - Make the plane length 31 (fewer values than threads) and check which threads' partial
#   results are empty.
# - Replace the Welford update by the one-pass sums in a copy of v2 and feed it data with
#   mean 1000.
# - Run `kernel.check_race(grid, block, args)` on your own kernels (or set
#   ADAIN_NP_EMU_RACE=1 for a whole run), and plant a race between blocks: each block
#   writing the same address.
# - Exercises: `--exercises` (Welford's merge, the butterfly, and your own one-pass kernel
#   graded on the emulator).


if __name__ == "__main__":
    sys.exit(run(main))
