"""Benchmarks against torch, measured in the same run: ``python -m adain_np.bench``.

Each measurement runs in its own subprocess so its peak RSS (ru_maxrss) is its own.
Torch gets the same number of threads as NumPy's BLAS. The library never imports
torch: the torch side is the script tools/bench_torch.py (it needs a checkout and the
test extra, ``pip install -e '.[test]'``).

    encoder   forward of the VGG encoder (to relu4_1) on 1x3x512x512
    step      one training step (forward + backward of Net) at 8x3x256x256
    stylize   style_transfer on a 512x512 content and style
    video     stylize_video frames per second on a 512x512 clip, image style (ours only)
    dist      data-parallel step and allreduce time, 1 rank x 2 BLAS threads vs 2 ranks x 1 (mpiexec)
    bigimage  streaming stylize at 4K and 8K: time and peak RSS, against 512x512 and torch at 4K
    convs     ours only: every 3x3 conv path (im2col, Winograd f2/f4, thread pool) per layer
              shape in one process, and the winograd.CONV_RULE that follows (bench_convs.py)
    conv-errors  ours only: float32 error of each conv path against float64, per layer shape

--conv forces a conv path (as ADAIN_CONV), --pool N runs Winograd blocks over N threads
with 1-thread BLAS, --load N keeps N busy processes on the cores during both sides' runs.

``python -m adain_np.bench --device gpu`` runs tools/bench_gpu.py instead: every CUDA
conv kernel version against cuDNN, the whole training step and stylize, peak memory.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from . import winograd
from .cli import ArgumentParser, UserError, add_conv_flag, apply_conv_flag, run_cli

WORKLOADS = {  # name: (input shape, repeats)
    "encoder": ((1, 3, 512, 512), 3),
    "step": ((8, 3, 256, 256), 3),
    "stylize": ((1, 3, 512, 512), 3),
}
TOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def bench_inputs(shape):
    """The content and style batch both sides time: seeded, in [0, 1)."""
    rng = np.random.default_rng(0)
    return rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)


def time_runs(run, repeats):
    """Wall times of `repeats` calls after one warm-up (first-touch page faults, BLAS threads)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def report(times):
    """The worker's one output line: times and this process's peak RSS."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "peak_mb": peak_mb}))


def _ours(workload, repeats):
    import adain_np
    from adain_np.params import init_decoder_params, init_vgg_params
    net = adain_np.Net(init_vgg_params(0), init_decoder_params(0))
    content, style = bench_inputs(WORKLOADS[workload][0])

    def run():
        if workload == "encoder":
            net.encode(content)
        elif workload == "step":
            net.forward(content, style)
            net.backward()
        else:
            net.style_transfer(content, style)
    report(time_runs(run, repeats))


def _tool(name):
    path = os.path.join(TOOLS_DIR, name)
    if not os.path.exists(path):
        raise UserError(f"the torch comparison needs a checkout of the repository ({path} is missing)")
    return path


def _measure(side, workload, args):
    repeats = str(args.repeats or WORKLOADS[workload][1])
    if side == "ours":
        cmd = [sys.executable, "-m", "adain_np.bench", "--worker", "--workload", workload,
               "--repeats", repeats]
    else:
        cmd = [sys.executable, _tool("bench_torch.py"), workload, repeats, str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"{side} {workload} failed: {(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    device = argv[argv.index("--device") + 1] if "--device" in argv[:-1] else "cpu"
    if device == "gpu":
        # The GPU benchmark (every conv kernel version vs cuDNN, the step, stylize, memory)
        # has its own flags: see python tools/bench_gpu.py --help.
        return subprocess.run([sys.executable, _tool("bench_gpu.py")] + argv).returncode
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="*", help=f"any of {sorted(WORKLOADS)}, or convs / conv-errors alone; default: encoder step")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=0, help="timed runs (after one warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                        help="gpu: run tools/bench_gpu.py (kernels vs cuDNN) instead")
    add_conv_flag(parser)
    parser.add_argument("--pool", type=int, default=None,
                        help="conv blocks over a pool of this many threads with 1-thread BLAS "
                             "(ADAIN_CONV_THREADS); 0: OpenBLAS's own threads (default: the cores)")
    parser.add_argument("--load", type=int, default=0,
                        help="busy background processes (one core each) during both sides' runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    apply_conv_flag(args)  # ADAIN_CONV for this process and the workers
    if not 0 <= (args.pool or 0) <= 64 or not 0 <= args.load <= 64:
        parser.error("--pool and --load must be between 0 and 64")
    if args.pool is not None:
        os.environ["ADAIN_CONV_THREADS"] = str(args.pool)
    if args.workloads in (["convs"], ["conv-errors"]):  # per-layer conv paths, ours only (bench_convs.py)
        from . import bench_convs
        if args.workloads == ["convs"]:
            bench_convs.bench_convs(repeats=args.repeats or 3, pool_threads=args.pool or None)
        else:
            bench_convs.print_conv_errors()
        return 0
    if "video" in args.workloads:  # stylize_video's frames/s at 512 on the CPU (no torch side)
        from .stylize_video import bench_video
        print(json.dumps(bench_video(size=512, frames=args.repeats or 8)), flush=True)
        args.workloads = [w for w in args.workloads if w != "video"]
        if not args.workloads:
            return 0
    if "dist" in args.workloads:  # 1 rank x 2 BLAS threads against 2 ranks x 1 (dist.py, mpiexec)
        from .dist import bench_dist
        bench_dist(repeats=args.repeats or 3)
        args.workloads = [w for w in args.workloads if w != "dist"]
        if not args.workloads:
            return 0
    if "bigimage" in args.workloads:  # streaming stylize at 4K and 8K: time, peak RSS (bench_bigimage.py)
        from .bench_bigimage import bench_bigimage
        bench_bigimage(args.threads)
        args.workloads = [w for w in args.workloads if w != "bigimage"]
        if not args.workloads:
            return 0
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload {sorted(unknown)[0]!r}; choose from {sorted(WORKLOADS)}")
    if args.worker:
        return _ours(args.workload, args.repeats)
    print(f"threads={args.threads}  OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
          f"  numpy {np.__version__}  conv={os.environ.get('ADAIN_CONV', 'auto')}"
          f"  pool={winograd.pool_threads_from_env()}  load={args.load}")
    # --load: processes that each burn one core while both sides are measured.
    # Each one stops by itself once this process is gone (killed, say), not burning on orphaned.
    burn = f"import os\nwhile os.getppid() == {os.getpid()}: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(args.load)]
    try:
        rows = _compare(args)
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
    _print_rows(rows)


def _compare(args):
    rows = []
    for workload in args.workloads or ["encoder", "step"]:
        shape, _ = WORKLOADS[workload]
        ours = _measure("ours", workload, args)
        ref = _measure("torch", workload, args)
        t_ours, t_ref = statistics.median(ours["times"]), statistics.median(ref["times"])
        rows.append((workload, "x".join(map(str, shape)), t_ours, t_ref, ours["peak_mb"], ref["peak_mb"]))
        print(f"  {workload}: ours {['%.2f' % t for t in ours['times']]} s, torch {['%.2f' % t for t in ref['times']]} s",
              flush=True)
    return rows


def _print_rows(rows):
    print(f"\n{'workload':<9} {'shape':<12} {'ours s':>7} {'torch s':>8} {'time ratio':>10}"
          f" {'ours MB':>8} {'torch MB':>9} {'mem ratio':>9}")
    for name, shape, t_ours, t_ref, m_ours, m_ref in rows:
        print(f"{name:<9} {shape:<12} {t_ours:7.2f} {t_ref:8.2f} {t_ours / t_ref:10.2f}"
              f" {m_ours:8.0f} {m_ref:9.0f} {m_ours / m_ref:9.2f}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
