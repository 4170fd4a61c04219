"""Benchmarks against torch, measured in the same run: ``python -m adain_np.bench``.

Each measurement runs in its own subprocess so its peak RSS (ru_maxrss) is its own.
Torch gets the same number of threads as NumPy's BLAS. Torch is needed only here
and in the tests (``pip install -e '.[test]'``).

    encoder   forward of the VGG encoder (to relu4_1) on 1x3x512x512
    step      one training step (forward + backward of Net) at 8x3x256x256
    stylize   style_transfer on a 512x512 content and style

``python -m adain_np.bench --device gpu`` runs adain_np.bench_gpu instead: every CUDA
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

WORKLOADS = {  # name: (input shape, repeats)
    "encoder": ((1, 3, 512, 512), 3),
    "step": ((8, 3, 256, 256), 3),
    "stylize": ((1, 3, 512, 512), 3),
}


def _inputs(shape):
    rng = np.random.default_rng(0)
    return rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)


def _ours(workload, shape, repeats, device):
    import adain_np
    from adain_np.backend import NumpyBackend
    from adain_np.params import init_decoder_params, init_vgg_params
    backend = NumpyBackend()
    if device == "gpu":
        from adain_np.kernel_backend import make_backend
        backend = make_backend("gpu")
    net = adain_np.Net(init_vgg_params(0), init_decoder_params(0), backend)
    content, style = _inputs(shape)
    sync = getattr(backend, "synchronize", lambda: None)

    def run():
        if workload == "encoder":
            net.encode(backend.asarray(content))
        elif workload == "step":
            net.forward(content, style)
            net.backward()
        else:
            adain_np.style_transfer(None, None, content, style, net=net)
        sync()
    return _time(run, repeats)


def _torch(workload, shape, repeats, threads):
    import torch
    from adain_np.params import init_decoder_params, init_vgg_params
    from adain_np.torch_reference import TorchNet, adaptive_instance_normalization
    torch.set_num_threads(threads)
    net = TorchNet(init_vgg_params(0), init_decoder_params(0))
    content, style = (torch.tensor(a) for a in _inputs(shape))

    def run():
        if workload == "encoder":
            with torch.no_grad():
                net.encode(content)
        elif workload == "step":
            net.decoder_grads(content, style)
        else:
            with torch.no_grad():
                net.decoder(adaptive_instance_normalization(net.encode(content), net.encode(style)))
    return _time(run, repeats)


def _time(run, repeats):
    run()  # warm-up: first-touch page faults, BLAS thread start-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _worker(args):
    shape, repeats = WORKLOADS[args.workload]
    repeats = args.repeats or repeats
    if args.side == "ours":
        times = _ours(args.workload, shape, repeats, args.device)
    else:
        times = _torch(args.workload, shape, repeats, args.threads)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "peak_mb": peak_mb}))


def _measure(side, workload, args):
    cmd = [sys.executable, "-m", "adain_np.bench", "--worker", "--side", side,
           "--workload", workload, "--threads", str(args.threads), "--device", args.device]
    if args.repeats:
        cmd += ["--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} {workload} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--device" in argv and argv[argv.index("--device") + 1:][:1] == ["gpu"] and "--worker" not in argv:
        # The GPU benchmark (every conv kernel version vs cuDNN, the step, stylize, memory)
        # has its own flags: see python -m adain_np.bench_gpu --help.
        from . import bench_gpu
        return bench_gpu.main(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="*", help=f"any of {sorted(WORKLOADS)}; default: encoder step")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=0, help="timed runs (after one warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                        help="gpu: run adain_np.bench_gpu (kernels vs cuDNN) instead")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["ours", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload {sorted(unknown)[0]!r}; choose from {sorted(WORKLOADS)}")
    if args.worker:
        return _worker(args)
    print(f"threads={args.threads}  OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
          f"  numpy {np.__version__}")
    rows = []
    for workload in args.workloads or ["encoder", "step"]:
        shape, _ = WORKLOADS[workload]
        ours = _measure("ours", workload, args)
        ref = _measure("torch", workload, args)
        t_ours, t_ref = statistics.median(ours["times"]), statistics.median(ref["times"])
        rows.append((workload, "x".join(map(str, shape)), t_ours, t_ref, ours["peak_mb"], ref["peak_mb"]))
        print(f"  {workload}: ours {['%.2f' % t for t in ours['times']]} s, torch {['%.2f' % t for t in ref['times']]} s",
              flush=True)
    print(f"\n{'workload':<9} {'shape':<12} {'ours s':>7} {'torch s':>8} {'time ratio':>10}"
          f" {'ours MB':>8} {'torch MB':>9} {'mem ratio':>9}")
    for name, shape, t_ours, t_ref, m_ours, m_ref in rows:
        print(f"{name:<9} {shape:<12} {t_ours:7.2f} {t_ref:8.2f} {t_ours / t_ref:10.2f}"
              f" {m_ours:8.0f} {m_ref:9.0f} {m_ours / m_ref:9.2f}")


if __name__ == "__main__":
    sys.exit(main())
