"""Lesson 09: making a kernel fast, the four versions of the conv kernel and what each one fixes.

Run:  python lessons/09_fast_conv_kernel.py [--quick] [--out FOLDER] [--timings timings.json]

kernels/conv2d_forward.cu holds the forward convolution four times over. All four
compute the same thing (pad + 3x3 conv + bias + ReLU, lesson 02); they differ in
how they use the GPU's memory:

  v1  one thread per output value, reading everything from global memory;
  v2  implicit GEMM with 16x16 tiles staged in shared memory, one output per thread;
  v3  64x64 tiles, each thread computing a 4x4 block of outputs in registers;
  v4  128x128 tiles, 8x8 outputs per thread.

The idea behind v2-v4 is lesson 02's im2col + GEMM, done without ever building
the im2col matrix ("implicit" GEMM: each tile of it is gathered on the fly from
the image). What makes a GEMM fast on a GPU is REUSE: every number fetched from a
slow memory should feed as many multiply-adds as possible. The lesson works out
that reuse for each version, checks each version's output, and compares their
speed. With a GPU it times them itself. Without one it runs the kernels on the
CPU emulator for correctness only (the emulator's timings say nothing about a
GPU) and shows the times tools/gpu_check.sh MEASURED on an NVIDIA H200, stored in
kernels/results/h200_conv_timings.json (or any timings.json given with --timings).

Prints: per version, tile sizes and loads per multiply-add; how well the tiles fit
AdaIN's layers; errors; GPU timings (measured now, or the stored H200 run).
Draws: 09_reuse.png, 09_benchmark.png.
Check: every version against torch's conv2d (or the NumPy reference in float64).
"""
import json
import math
import os
import re
import sys

from _common import REPO_ROOT, Lesson, heading, import_torch, plt, rel_error, run

import numpy as np

from adain_np.cuda import emulator, emulator_launcher, gpu
from adain_np.backend import NumpyBackend
from adain_np.cli import UserError
from adain_np.cuda.kernel_backend import KernelBackend
from adain_np.cuda.source import kernel_source
from adain_np.cuda.versions import CONV_FORWARD_TILES

THREADS = 256            # every tiled version runs 256 threads per block
STORED_TIMINGS = os.path.join(REPO_ROOT, "kernels", "results", "h200_conv_timings.json")

# (name, Cin, Cout, H=W at a 256x256 input): layers of the encoder and decoder.
LAYERS = [("enc conv1_1", 3, 64, 256), ("enc conv1_2", 64, 64, 256), ("enc conv3_1", 128, 256, 64),
          ("enc conv4_1", 256, 512, 32), ("dec conv4_1", 512, 256, 32), ("dec conv1_2", 64, 3, 256)]


def tiled_versions():
    """{version: (BM, BN, BK, TM, TN)}, read from the CONV2D_FORWARD_TILED lines of the .cu file."""
    source = kernel_source("conv2d_forward.cu")
    found = re.findall(r"^CONV2D_FORWARD_TILED\(conv2d_forward_v(\d+),\s*(\d+),\s*(\d+),\s*(\d+),"
                       r"\s*(\d+),\s*(\d+)", source, flags=re.M)
    return {int(v): tuple(int(n) for n in rest) for v, *rest in found}


def add_args(parser):
    parser.add_argument("--timings", metavar="JSON",
                        help="a timings.json written by tools/gpu_check.sh on a GPU, to show instead "
                             "of the stored H200 run (used only when there is no GPU here)")


def main():
    lesson = Lesson(__doc__, extra_args=add_args)
    tiles = tiled_versions()                                         # {2: (16, 16, 16, 1, 1), ...}

    # %% ------------------------------------------------------------------------------
    # 1. Reuse, version by version. Think of the conv as the GEMM Y = A @ B, with
    # A = weights (Cout x Cin*9) and B = im2col(x) (Cin*9 x N*H*W), lesson 02.
    # v1: each thread computes one y from Cin*9 pairs (a, b), loading both from global
    #     memory: 2 loads per multiply-add (the caches catch some, but nothing is planned).
    # v2-v4: a block computes a BM x BN tile of Y. For each K-slice of BK it loads BM*BK
    #     values of A and BK*BN of B into shared memory ONCE, then does BM*BN*BK multiply-
    #     adds with them: (BM + BN) / (BM * BN) global loads per multiply-add.
    #     Inside the block each thread computes TM x TN outputs; per k it reads TM values of
    #     A and TN of B from shared memory into registers and does TM*TN multiply-adds:
    #     (TM + TN) / (TM * TN) shared loads per multiply-add. v2 (1x1) reads 2 values per
    #     multiply-add from shared memory, which then becomes the limit; v3 (4x4) 0.5;
    #     v4 (8x8) 0.25. The price: TM*TN accumulators in registers per thread.
    heading("1. loads per multiply-add, by version")
    print(f"{'version':8} {'tile BMxBN':>10} {'BK':>3} {'per thread':>10} {'global/FMA':>10} "
          f"{'shared/FMA':>10} {'FLOP/byte':>9}")
    reuse = {1: (2.0, None)}
    print(f"{'v1':8} {'-':>10} {'-':>3} {'1x1':>10} {2.0:10.3f} {'-':>10} {2 / 8:9.2f}")
    for v, (bm, bn, bk, tm, tn, *_rest) in sorted(tiles.items()):
        assert (bm // tm) * (bn // tn) == THREADS, (v, bm, bn, tm, tn)
        global_per_fma = (bm + bn) / (bm * bn)
        shared_per_fma = (tm + tn) / (tm * tn)
        reuse[v] = (global_per_fma, shared_per_fma)
        flop_per_byte = 2 / (4 * global_per_fma)                     # 2 FLOP per FMA, 4 bytes per float
        print(f"{'v' + str(v):8} {f'{bm}x{bn}':>10} {bk:>3} {f'{tm}x{tn}':>10} {global_per_fma:10.3f} "
              f"{shared_per_fma:10.3f} {flop_per_byte:9.2f}")
    # An H100 or H200 does ~67 TFLOP/s of fp32 FMAs (without tensor cores) from 3.35 or
    # 4.8 TB/s of HBM: it needs ~14-20 FLOP per byte from memory to keep its arithmetic
    # busy. v1 (0.25) and v2 (4) cannot get there without the caches' help; v3 (16) comes
    # close; v4 (32) can, on paper.
    print("an H100/H200 needs ~14-20 FLOP per byte from memory (67 TFLOP/s fp32 / 3.35-4.8 TB/s)")

    # The code behind the two first rows. v1 is the definition: every multiply-add reads one
    # input value and one weight from global memory.
    source = kernel_source("conv2d_forward.cu")                      # conv_gemm_tile.cuh included
    heading("1b. the code: v1, and the K-loop of the tiled core (kernels/conv_gemm_tile.cuh)")
    print(source_excerpt(source, "extern \"C\" __global__ void conv2d_forward_v1(", "\n}\n"))
    # v2-v4 share gemm_tile. Each pass of its K-loop stores the K-slice it fetched into the
    # shared tiles As and Bs, waits at a barrier until every thread's stores are in, starts
    # fetching the NEXT slice from global memory into registers, multiplies the slice in
    # shared memory, and waits again before the next pass overwrites As and Bs: without the
    # second barrier a fast thread would overwrite values a slow one is still reading.
    print(source_excerpt(source, "    for (int k0 = k_begin; k0 < k_end; k0 += BK) {",
                         "// the next iteration overwrites As/Bs\n    }\n"))

    # The table's 2.0 and 0.125 are arithmetic. To MEASURE them: copies of v1 and v2 with every
    # global load of an operand and every multiply-add counted by an atomicAdd on two global
    # counters. On the emulator the counts are deterministic (and so would they be on a GPU:
    # the work does not depend on the schedule). A shape that fills v2's 16x16 tiles and its
    # K-slices of 16 exactly (Cin*9 = 144 = 9 slices) gives the formula's numbers; the ragged
    # shape of section 3 shows what edges cost: loads skipped past K's end, multiply-adds
    # done on the zero padding and on clamped rows and columns nobody keeps.
    heading("1c. loads per multiply-add, counted")
    measured = count_loads_per_fma(source, shapes=((1, 16, 32, 8, 8), (1, 8, 20, 9, 11)))
    for (shape, version), (loads, fmas) in measured.items():
        print(f"v{version} on N, Cin, Cout, H, W = {shape}: {loads:>8} global loads / {fmas:>8} "
              f"multiply-adds = {loads / fmas:.4f} per multiply-add")

    # %% ------------------------------------------------------------------------------
    # 2. Bigger is not always better. A tile that hangs over the edge of Y computes
    # outputs nobody wants: v4's 128 rows for the decoder's last conv (Cout = 3) are 98%
    # waste. And a GPU needs enough blocks to fill its SMs (132 on an H100 or H200): big
    # tiles on a small layer leave most of the chip idle. That is why KernelBackend picks
    # the version by shape (pick_gemm_version: v2 when Cout <= 16, v4 only when Cout > 64
    # AND it still gives >= 128 blocks, else v3, and v1 when Cout <= 8), unless it is given
    # a table of per-shape winners measured on a GPU (its tuned_versions).
    heading("2. how the tiles fit AdaIN's layers (batch 8, 256x256 input)")
    batch = 8
    print(f"{'layer':12} {'Cin->Cout':>10} {'pixels':>7} | " + " | ".join(
        f"v{v}: blocks, useful" for v in sorted(tiles)) + " | shape rule")
    for name, cin, cout, side in LAYERS:
        cols = batch * side * side
        cells = []
        for v, (bm, bn, *_rest) in sorted(tiles.items()):
            blocks = math.ceil(cols / bn) * math.ceil(cout / bm)
            useful = cols * cout / (blocks * bm * bn)
            cells.append(f"{blocks:>7} {useful:6.0%}")
        picked = KernelBackend.pick_forward_version(cout, cols)
        print(f"{name:12} {f'{cin}->{cout}':>10} {cols:>7} | " + " | ".join(cells) + f" | v{picked}")
    # The rule as first written asked for >= 256 blocks (two per SM) before choosing v4.
    # The decoder's conv4_1 (512 -> 256 at 32x32, batch 8) gives v4 only 128 blocks, fewer
    # than the H200's 132 SMs, so that rule said v3; the stored H200 run says v4 (0.80 ms
    # against 0.94 ms for v3, section 4 prints them). One wave of 128 big blocks leaves 4 SMs
    # idle, but each block does 4x the multiply-adds per load of v3's, and with K = 4608
    # every block runs long enough for that to pay. So "enough blocks" was the wrong limit
    # here: a shape rule is a guess to be measured. KernelBackend's rule (the column above)
    # now asks for 128 blocks, and its tuned tables take the measured winner per shape.

    # %% ------------------------------------------------------------------------------
    # 3. Correctness: every version on the same input, through KernelBackend. A shape that
    # fills no tile evenly, so each kernel's edge handling is exercised.
    ok, reason = gpu.gpu_available()
    launcher = gpu.CupyLauncher() if ok else emulator_launcher.EmulatorLauncher()
    print(f"\nrunning kernels on: {'GPU: ' + reason if ok else 'CPU emulator (no GPU: ' + reason + ')'}")
    heading("3. every version computes the same conv")
    N, Cin, Cout, H, W = (1, 8, 20, 9, 11) if lesson.quick else (2, 64, 72, 17, 13)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, Cin, H, W)).astype(np.float32)
    w = (rng.standard_normal((Cout, Cin, 3, 3)) / np.sqrt(Cin * 9)).astype(np.float32)
    b = rng.standard_normal(Cout).astype(np.float32)
    outputs = {}
    for v in sorted(CONV_FORWARD_TILES):
        backend = KernelBackend(launcher, conv_version=v)
        y, _ = backend.conv_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b),
                                    reflect_pad=True, relu=True)
        outputs[v] = backend.to_host(y)
        print(f"v{v}: output {outputs[v].shape}, mean {outputs[v].mean():.5f}")

    # %% ------------------------------------------------------------------------------
    # 4. Timings: only a GPU gives numbers that mean anything here.
    # What the stored H200 numbers show (batch 8): on the layers with 128-512 output
    # channels v1 ~2 TFLOP/s, v2 ~6, v3 ~21, v4 ~28, where cuDNN reaches 30-38: the order
    # the reuse table predicts. With 64 output channels (conv1_x) v4's tiles are half empty
    # and v3 wins, as the fit table predicts. On the decoder's last conv (64 -> 3) every
    # tile is mostly waste and the naive v1, which wastes nothing, is the fastest kernel
    # (about 1.0 ms against 1.6 ms for v2), which is why the shape rule picks v1 for Cout <= 8.
    heading("4. timings")
    if ok:
        device, rows = time_on_gpu(launcher, quick=lesson.quick)
    else:
        path = lesson.args.timings or STORED_TIMINGS
        print("no GPU here: the emulator runs each CUDA thread as a CPU fiber, one block after\n"
              "another, so its times say nothing about a GPU. These are MEASURED GPU times, from\n"
              f"{os.path.relpath(path)} (tools/gpu_check.sh, CUDA events, median of up to 15 runs):")
        device, rows = read_timings(path)
    print(f"{'layer':12} {'version':7} {'ms':>8} {'TFLOP/s':>8}")
    for r in rows:
        print(f"{r['layer']:12} {r['version']:7} {r['ms']:8.3f} {r['tflops']:8.2f}")
    plot_benchmark(lesson, device, rows)

    # %% ------------------------------------------------------------------------------
    # Figure: the reuse table as bars.
    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = [f"v{v}" for v in sorted(reuse)]
    ax.bar(np.arange(len(names)) - 0.2, [reuse[v][0] for v in sorted(reuse)], 0.4,
           label="global-memory loads per FMA")
    ax.bar(np.arange(1, len(names)) + 0.2, [reuse[v][1] for v in sorted(reuse) if v != 1], 0.4,
           label="shared-memory loads per FMA")
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("loads per multiply-add (log)")
    ax.set_title("what tiling buys: fewer loads per multiply-add, version by version")
    ax.legend()
    fig.tight_layout()
    lesson.save_figure(fig, "09_reuse.png")

    # %% ------------------------------------------------------------------------------
    # Checks. Each kernel sums Cin*9 float32 products in its own order (and a GPU fuses
    # multiply-adds): ~1e-6 of the output's scale. An indexing error gives 1e-1 or more.
    heading("checks")
    # The tiles read from the .cu file must be the ones KernelBackend launches grids for.
    # The counted loads per multiply-add on the shape that fills v2's tiles exactly must be
    # the table's: integers counted and divided, so any difference is a real one.
    exact = (1, 16, 32, 8, 8)
    for version in (1, 2):
        loads, fmas = measured[(exact, version)]
        lesson.check(f"v{version}: |counted loads per FMA - table's {reuse[version][0]}| on {exact}",
                     abs(loads / fmas - reuse[version][0]), 1e-12)
    mismatches = sum((CONV_FORWARD_TILES.get(v) or ())[:2] != (bm, bn) for v, (bm, bn, *_rest) in tiles.items())
    mismatches += sum(v not in tiles for v, tile in CONV_FORWARD_TILES.items() if tile is not None)
    lesson.check("tiled versions whose .cu tile differs from KernelBackend's grid (count)",
                 float(mismatches), 0.5)
    torch = import_torch()
    if torch is not None:
        F = torch.nn.functional
        reference = F.relu(F.conv2d(F.pad(torch.from_numpy(x), (1, 1, 1, 1), mode="reflect"),
                                    torch.from_numpy(w), torch.from_numpy(b))).numpy()
        label = "torch"
    else:
        reference, _ = NumpyBackend(np.float64).conv_forward(x.astype(np.float64), w.astype(np.float64),
                                                             b.astype(np.float64), True, True)
        label = "numpy float64"
    for v, y in outputs.items():
        lesson.check(f"v{v}: max |kernel - {label}| / max |{label}|", rel_error(y, reference), 1e-4)
    return lesson.finish()


def source_excerpt(source, start, end):
    """The text of source from the line holding `start` through `end`."""
    begin = source.rindex("\n", 0, source.index(start)) + 1
    return source[begin:source.index(end, begin) + len(end)]


COUNTERS = """
__device__ unsigned long long* lesson_counts;   // [loads, multiply-adds] of the instrumented copies
__device__ __forceinline__ float counted_load(float v) { atomicAdd(&lesson_counts[0], 1ull); return v; }
__device__ __forceinline__ void counted_fma() { atomicAdd(&lesson_counts[1], 1ull); }
"""
# (text in the .cu files, its instrumented replacement): each global load of an operand is
# wrapped in counted_load, each multiply-add preceded by counted_fma, and the kernels get
# the counters as one more argument.
INSTRUMENT = (
    ("acc = fmaf(plane[ih * W + iw], wk[kh * ksize + kw], acc);",
     "counted_fma(); acc = fmaf(counted_load(plane[ih * W + iw]), counted_load(wk[kh * ksize + kw]), acc);"),
    ("if (!TAIL_SELECT) return k < k_end ? (ld.*load)(c, k) : 0.f;",
     "if (!TAIL_SELECT) return k < k_end ? counted_load((ld.*load)(c, k)) : 0.f;"),
    ("for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);",
     "for (int j = 0; j < TN; ++j) { counted_fma(); acc[i][j] = fmaf(a[i], b[j], acc[i][j]); }"),
    ("int ksize, int relu)", "int ksize, int relu, unsigned long long* counts)"),
    ("    const int pad = ksize / 2;\n", "    const int pad = ksize / 2;\n    lesson_counts = counts;\n"),
    ("        __shared__ float As[BK * (BM + GEMM_PAD)];",
     "        lesson_counts = counts;                                                      \\\n"
     "        __shared__ float As[BK * (BM + GEMM_PAD)];"),
)


def count_loads_per_fma(source, shapes):
    """{(shape, version): (global loads, multiply-adds)} from instrumented copies of v1 and v2."""
    for text, _ in INSTRUMENT:
        if text not in source:
            raise UserError(f"conv2d_forward.cu changed: the lesson's instrumentation expects {text!r}")
    counted = source
    for text, replacement in INSTRUMENT:
        counted = counted.replace(text, replacement)
    # The counters go before the first kernel (after the includes' own declarations).
    first = counted.index("__device__ __forceinline__ int reflect_index")
    counted = counted[:first] + COUNTERS + counted[first:]
    ok, _ = gpu.gpu_available()
    if ok:
        import cupy
        module = cupy.RawModule(code=counted, options=("-std=c++17",))
        kernel, xp, to_host = module.get_function, cupy, cupy.asnumpy
    else:
        kernel = lambda name: emulator.RawKernel(counted, name, filename="kernels/conv2d_forward.cu")
        xp, to_host = np, np.asarray
    result = {}
    rng = np.random.default_rng(1)
    for shape in shapes:
        N, Cin, Cout, H, W = shape
        x = xp.asarray(rng.standard_normal((N, Cin, H, W)).astype(np.float32))
        w = xp.asarray(rng.standard_normal((Cout, Cin, 3, 3)).astype(np.float32))
        b = xp.asarray(rng.standard_normal(Cout).astype(np.float32))
        y = xp.empty((N, Cout, H, W), dtype=np.float32)
        grids = {1: (math.ceil(N * Cout * H * W / THREADS),),
                 2: (math.ceil(N * H * W / 16), math.ceil(Cout / 16))}
        for version, grid in grids.items():
            counts = xp.zeros(2, dtype=np.uint64)                     # [loads, multiply-adds]
            kernel(f"conv2d_forward_v{version}")(grid, (THREADS,), (
                x, w, b, y, np.int32(N), np.int32(Cin), np.int32(H), np.int32(W), np.int32(Cout),
                np.int32(3), np.int32(1), counts))
            loads, fmas = (int(v) for v in to_host(counts))
            result[(shape, version)] = (loads, fmas)
    return result


def time_on_gpu(launcher, quick):
    """Median time of each version (and cuDNN when torch has CUDA) on a few AdaIN layers."""
    import cupy
    backend = KernelBackend(launcher)
    batch = 2 if quick else 8
    rows = []
    layers = [LAYERS[1], LAYERS[3], LAYERS[5]]
    for name, cin, cout, side in layers:
        if quick:
            side = min(side, 64)
        rng = np.random.default_rng(0)
        x = backend.asarray(rng.standard_normal((batch, cin, side, side), dtype=np.float32))
        w = backend.asarray((rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32))
        b = backend.asarray(rng.standard_normal(cout, dtype=np.float32))
        flops = 2.0 * batch * side * side * cin * cout * 9
        for v in sorted(CONV_FORWARD_TILES):
            ms = cuda_median_ms(cupy, lambda: backend.conv_forward(x, w, b, True, True, version=v))
            rows.append(dict(layer=name, version=f"v{v}", ms=ms, tflops=flops / ms / 1e9))
        rows.extend(time_cudnn(name, x, w, b, flops))
    return f"{gpu.gpu_available()[1]}, batch {batch}", rows


def cuda_median_ms(cupy, fn, repeats=10):
    fn()                                                             # warm-up, and compile
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def time_cudnn(name, x, w, b, flops):
    try:
        import torch
        if not torch.cuda.is_available():
            return []
    except ImportError:
        return []
    torch.backends.cudnn.allow_tf32 = False                          # fp32, as the kernels
    xt, wt, bt = (torch.as_tensor(a, device="cuda") for a in (x, w, b))
    F = torch.nn.functional

    def run_once():
        with torch.no_grad():
            F.relu(F.conv2d(F.pad(xt, (1, 1, 1, 1), mode="reflect"), wt, bt))
    run_once()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run_once()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    ms = float(np.median(times))
    return [dict(layer=name, version="cuDNN", ms=ms, tflops=flops / ms / 1e9)]


def read_timings(path):
    """The forward rows of a tools/gpu_check.sh timings.json: (device, rows)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        rows = [r for r in data["rows"] if r.get("op") == "forward" and np.isfinite(r.get("ms", np.nan))]
        device = f"{data['device']}, batch {data['batch']} (measured, {os.path.basename(path)})"
    except OSError as err:
        raise UserError(f"--timings {path}: {err.strerror or err}") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"--timings {path}: not a timings.json from tools/gpu_check.sh ({err})") from None
    if not rows:
        raise UserError(f"--timings {path}: no forward timings in it")
    return device, rows


def plot_benchmark(lesson, device, rows):
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    versions = list(dict.fromkeys(r["version"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(versions)
    for i, version in enumerate(versions):
        values = [next((r["tflops"] for r in rows if r["layer"] == layer and r["version"] == version),
                       np.nan) for layer in layers]
        ax.bar(np.arange(len(layers)) + (i - (len(versions) - 1) / 2) * width, values, width,
               label=version)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("TFLOP/s (fp32)")
    ax.set_title(f"conv forward (pad + 3x3 conv + bias + ReLU): {device}")
    ax.legend()
    fig.tight_layout()
    lesson.save_figure(fig, "09_benchmark.png")


# %% [markdown]
# What to try
# - Count the loads of v3 and v4 with the same instrumentation (their grids are in
#   kernels/conv2d_forward.cu).
# - Find the layer shape where v4's useful fraction drops below 50% and predict which
#   version wins there.
# - Exercises: `--exercises` (loads per multiply-add, a tile's useful fraction).


if __name__ == "__main__":
    sys.exit(run(main))
