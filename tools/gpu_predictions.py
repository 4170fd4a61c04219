"""The three predictions to check first on a GPU, each as our kernels timed with CUDA events
(median over repeats, rotating input sets so none stays in L2), then cuDNN's own settings:

  bias    db alone at Cout = 64, 8 x 64 x 256 x 256 (vgg.2's output): bias v1/v2/v3, and
          weight v8 (db by a bias kernel) against v9 (db fused into the weight kernel).
          Prediction: v2 ~1.9 ms; v3 and the fused v9 remove most of it (~4 ms per step).
  relu    the same conv (64 -> 64 at 8 x 256^2) backward with relu=True and relu=False, per
          backward-data and backward-weight version: the upper bound on what computing the
          mask elsewhere can gain; the select versions (data v5/v6, weight v8) close part.
  splits  256 -> 256 at 8 x 64^2, weight v4 with split_k (540 blocks, 2.05 waves on an
          H200) against versions.split_k_by_waves (SM count and blocks per SM from CuPy).
  tf32    cuDNN forward/backward with allow_tf32=True and cudnn.benchmark=True on the four
          heaviest conv shapes (bench_gpu.conv_shapes), beside TF32 off: for the record.

    python tools/gpu_predictions.py [--dry-run] [--out DIR]

--dry-run: tiny shapes on the emulator and torch CPU (checks the code, not the times).
Results: DIR/gpu_predictions.json; one line per measurement on stdout.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_gpu  # noqa: E402  (puts the repository and tests/ on sys.path)

from adain_np.cli import atomic_path, run_cli  # noqa: E402
from adain_np.cuda import versions  # noqa: E402
from adain_np.cuda.kernel_backend import KernelBackend  # noqa: E402
from adain_np.cuda.versions import CONV_BACKWARD_WEIGHT_TILES  # noqa: E402

SETS = 3  # input sets rotated per measurement


def median_ms(env, fn, opts):
    return bench_gpu.time_calls(env.measure_ours, fn, SETS, opts.min_time, opts.min_reps, 50)[0]


def conv_inputs(env, backend, N, Cin, Cout, H, W, relu, seed=0):
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(SETS):
        x = rng.standard_normal((N, Cin, H, W), dtype=np.float32)
        w = (rng.standard_normal((Cout, Cin, 3, 3), dtype=np.float32) / math.sqrt(Cin * 9))
        b = rng.standard_normal(Cout, dtype=np.float32)
        dy = rng.standard_normal((N, Cout, H, W), dtype=np.float32)
        x, w, b, dy = (backend.asarray(a) for a in (x, w, b, dy))
        _, cache = backend.conv_forward(x, w, b, True, relu)
        sets.append((dy, cache))
    return sets


def bias_prediction(env, backend, opts, out):
    N, C, S = opts.batch, 64, opts.size
    sets = conv_inputs(env, backend, N, 3, C, S, S, True)
    for version in versions.CONV_BACKWARD_BIAS_VERSIONS:
        ms = median_ms(env, lambda i: backend.conv_backward(*sets[i], need_dx=False, weight_version=8,
                                                            bias_version=version), opts)
        out.append(dict(case="bias", what=f"weight v8 + bias v{version}", ms=ms))
    ms = median_ms(env, lambda i: backend.conv_backward(*sets[i], need_dx=False, weight_version=9), opts)
    out.append(dict(case="bias", what="weight v9 (db fused)", ms=ms))
    # The bias kernels alone (v1 is one thread per channel: slow by design, timed for scale).
    for version in (2, 3):
        db = backend._empty((C,))  # sets[i] = (dy, (x, w, y, reflect)): y is the mask
        if version == 2:
            fn = lambda i: backend._launch(  # noqa: E731
                "conv2d_backward.cu", "conv2d_backward_bias_v2", (C,), (256,),
                (sets[i][0], sets[i][1][2], db, np.int32(N), np.int32(C), np.int32(S * S), np.int32(1)))
        else:
            fn = lambda i: backend._conv_backward_bias_v3(sets[i][0], sets[i][1][2], db, N, C, S * S, 1)  # noqa: E731
        out.append(dict(case="bias", what=f"bias v{version} alone", ms=median_ms(env, fn, opts)))


def relu_prediction(env, backend, opts, out):
    N, C, S = opts.batch, 64, opts.size
    for relu in (True, False):
        sets = conv_inputs(env, backend, N, C, C, S, S, relu, seed=1)
        for v in sorted(t for t in versions.CONV_BACKWARD_DATA_TILES if t != 1):
            ms = median_ms(env, lambda i: backend.conv_backward(*sets[i], need_dw=False, data_version=v), opts)
            out.append(dict(case="relu", what=f"bwd_data v{v} relu={relu}", ms=ms))
        for v in (4, 8, 9):
            ms = median_ms(env, lambda i: backend.conv_backward(*sets[i], need_dx=False, weight_version=v,
                                                                bias_version=3), opts)
            out.append(dict(case="relu", what=f"bwd_weight v{v} (+db) relu={relu}", ms=ms))


def device_slots(env, backend, kernel_name):
    """(SM count, resident blocks per SM of kernel_name), from CuPy; the tile's
    __launch_bounds__ minimum on the emulator (no occupancy there)."""
    tile = versions.TILED_KERNELS[kernel_name][1]
    if env.cp is None:
        return 132, tile.min_blocks
    cp = env.cp
    sms = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["multiProcessorCount"]
    try:
        func = backend.launcher.kernel("conv2d_backward.cu", kernel_name)
        ptr = getattr(getattr(func, "kernel", None), "ptr", None)
        per_sm = cp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(ptr, tile.threads, 0)
    except Exception as err:  # occupancy API missing or a different RawKernel layout
        print(f"occupancy API failed ({type(err).__name__}: {err}); using __launch_bounds__")
        per_sm = tile.min_blocks
    return sms, per_sm


def split_prediction(env, backend, opts, out):
    N, C, S = opts.batch, 256, max(opts.size // 4, 8)
    sets = conv_inputs(env, backend, N, C, C, S, S, True, seed=2)
    sms, per_sm = device_slots(env, backend, "conv2d_backward_weight_v4")
    tile = CONV_BACKWARD_WEIGHT_TILES[4]
    tiles = math.ceil(C / tile.bm) * math.ceil(C * 9 / tile.bn)
    choosers = {"split_k": KernelBackend.split_k,
                "split_k_by_waves": lambda t, p, bk, min_chunk: versions.split_k_by_waves(
                    t, p, bk, sms, per_sm, min_chunk)}
    for name, chooser in choosers.items():
        splits, _ = chooser(tiles, N * S * S, tile.bk, min_chunk=KernelBackend.split_k_min_chunk)
        backend.split_k = chooser
        try:
            ms = median_ms(env, lambda i: backend.conv_backward(*sets[i], need_dx=False, weight_version=4,
                                                                bias_version=3), opts)
        finally:
            del backend.split_k
        blocks = tiles * splits
        out.append(dict(case="splits", what=f"{name}: {splits} splits, {blocks} blocks, "
                        f"{blocks / (sms * per_sm):.2f} waves ({sms} SMs x {per_sm})", ms=ms))


def tf32_record(env, opts, out):
    torch = env.torch
    shapes = sorted(bench_gpu.conv_shapes(opts.batch, opts.size), key=bench_gpu.conv_flops)[-4:]
    for tf32, bench in ((False, False), (True, True)):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = bench
        for s in shapes:
            g = torch.Generator().manual_seed(3)
            xs = [torch.randn(s["N"], s["Cin"], s["H"], s["W"], generator=g).to(env.tdev) for _ in range(SETS)]
            w = torch.randn(s["Cout"], s["Cin"], s["k"], s["k"], generator=g).to(env.tdev)
            dy = torch.randn(s["N"], s["Cout"], s["H"], s["W"], generator=g).to(env.tdev)
            for x in xs:
                x.requires_grad_(True)
            w.requires_grad_(True)
            pad = s["k"] // 2

            def step(i):
                y = torch.nn.functional.conv2d(torch.nn.functional.pad(xs[i], (pad,) * 4, mode="reflect"), w)
                torch.autograd.grad(y, (xs[i], w), dy)
            ms = bench_gpu.time_calls(env.measure_torch, step, SETS, opts.min_time, opts.min_reps, 50)[0]
            out.append(dict(case="tf32", what=f"cuDNN fwd+bwd {s['name']} {s['Cin']}->{s['Cout']}@{s['H']} "
                            f"allow_tf32={tf32} benchmark={bench}", ms=ms))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False


CASES = {"bias": bias_prediction, "relu": relu_prediction, "splits": split_prediction}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="emulator + torch CPU, tiny shapes")
    parser.add_argument("--only", nargs="+", default=[*CASES, "tf32"], choices=[*CASES, "tf32"])
    parser.add_argument("--out", default=os.environ.get("OUT") or None)
    opts = parser.parse_args(argv)
    opts.batch, opts.size = (1, 16) if opts.dry_run else (8, 256)
    opts.min_time, opts.min_reps = (0.0, 1) if opts.dry_run else (0.2, 5)
    env = bench_gpu.Env(opts.dry_run, cudnn_benchmark=False)
    backend = KernelBackend(env.launcher)
    results = []
    for case in opts.only:
        before = len(results)
        (tf32_record(env, opts, results) if case == "tf32" else CASES[case](env, backend, opts, results))
        for r in results[before:]:
            print(f"{r['case']:7s} {r['ms']:9.3f} ms  {r['what']}", flush=True)
        env.free()
    if opts.out:
        os.makedirs(opts.out, exist_ok=True)
        with atomic_path(os.path.join(opts.out, "gpu_predictions.json")) as tmp:
            with open(tmp, "w") as f:
                json.dump(dict(device=env.device, dry_run=opts.dry_run, results=results), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
