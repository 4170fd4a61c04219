"""GPU benchmark of the CUDA kernels against PyTorch/cuDNN: ``python -m adain_np.bench --device gpu``
(adain_np.bench runs this script with its arguments), or ``python tools/bench_gpu.py``.

In one run, on one card:
  1. peak     the card's fp32 peak, measured with a large torch matmul (TF32 off), beside
              the datasheet value for H100/H200.
  2. convs    every distinct conv shape of the encoder (vgg[:31]) and the decoder at
              batch x 3 x size x size: forward, backward-data and backward-weight for every
              numbered kernel version and for cuDNN. Each version is first checked against
              torch fp32 (TF32 off) on fresh random inputs, then timed with CUDA events:
              warm-up, then the median of repeated calls rotating over a few input sets (so
              no set stays in the 50 MB L2 cache). The fastest checked version per shape and
              op is the "tuned" table.
  3. step     a whole training step (forward, backward, Adam, on the device) of adain_np.Net
              with the default version picking and with the tuned table, against
              pytorch-AdaIN's step in torch (TorchNet + torch.optim.Adam); peak GPU memory of
              each (CuPy pool high-water, tracked by a counting allocator, against
              torch.cuda.max_memory_allocated / max_memory_reserved).
  4. stylize  one stylize at 1 x 3 x S x S (S = --stylize-size), ours against torch.
GFLOP/s are direct-convolution FLOPs (2*N*H*W*Cout*Cin*k*k per op) over the time.
The summary table is printed last; with --out (default $OUT) the full results go to
bench_gpu.json and the log lines to bench_gpu.txt there.

--dry-run runs the same code on the CPU: the kernels on the emulator, torch on the CPU,
tiny shapes (default batch 1, size 16, stylize 16) and one repeat, to catch mistakes before
spending device time. Its timings mean nothing.

Exit status: 0 when every check passed, 1 when a check failed or a case raised, 2 (one
line) for bad arguments or a missing GPU/torch.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback

import numpy as np

# A script beside the package, not in it: it needs torch, which the library never imports.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adain_np.cli import UserError, atomic_path, run_cli  # noqa: E402
from adain_np.params import DECODER_LAYERS, ENCODER_END, VGG_LAYERS  # noqa: E402

# Datasheet fp32 (non-tensor) peaks, TFLOP/s: NVIDIA H100/H200 datasheets (SXM boards).
DATASHEET_FP32_TFLOPS = (("H200 NVL", 60.0), ("H200", 67.0), ("H100 NVL", 60.0),
                         ("H100 PCIe", 51.0), ("H100", 67.0))
REL_TOL = 1e-3  # max |ours - torch| / max |torch|: fp32 sums of up to ~5e5 terms in two orders
NAIVE_WEIGHT_MAX_PIXELS = 32768  # v1 backward-weight loops over N*H*W per thread: too slow above


# ------------------------------------------------------------------------------ shapes

def conv_shapes(batch, size):
    """The distinct conv shapes of a training step at batch x 3 x size x size.

    Returns a list of dicts: name, N, Cin, Cout, H, W, k, relu, and how many times one
    training step runs each op on that shape (the encoder runs forward 3 times: style,
    content, decoded image; it is frozen, so it only needs backward-data, once; the
    decoder's first conv needs no backward-data).
    """
    shapes = {}

    def walk(prefix, layers, h, w, fwd, bdata, bweight):
        first_conv = True
        for i, layer in enumerate(layers):
            if layer[0] == "conv":
                _, cin, cout, k = layer
                relu = i + 1 < len(layers) and layers[i + 1][0] == "relu"
                key = (cin, cout, h, w, k, relu)
                entry = shapes.setdefault(key, dict(
                    name=[], N=batch, Cin=cin, Cout=cout, H=h, W=w, k=k, relu=relu,
                    step_count={"forward": 0, "bwd_data": 0, "bwd_weight": 0},
                    occurrences={"vgg": 0, "dec": 0}))
                entry["name"].append(f"{prefix}.{i}")
                entry["occurrences"][prefix] += 1
                entry["step_count"]["forward"] += fwd
                entry["step_count"]["bwd_data"] += 0 if (prefix == "dec" and first_conv) else bdata
                entry["step_count"]["bwd_weight"] += bweight
                first_conv = False
            elif layer[0] == "pool":
                h, w = (h + 1) // 2, (w + 1) // 2
            elif layer[0] == "up":
                h, w = 2 * h, 2 * w
        return h, w

    h, w = walk("vgg", VGG_LAYERS[:ENCODER_END], size, size, 3, 1, 0)
    walk("dec", DECODER_LAYERS, h, w, 1, 1, 1)
    out = list(shapes.values())
    for entry in out:
        entry["name"] = "+".join(entry["name"])
    return out


def conv_flops(shape):
    return 2.0 * shape["N"] * shape["H"] * shape["W"] * shape["Cout"] * shape["Cin"] * shape["k"] ** 2


def stylize_flops(size):
    """Conv FLOPs of one stylize at 1 x 3 x size x size: two encodes and one decode."""
    return sum(conv_flops(s) * (2 * s["occurrences"]["vgg"] + s["occurrences"]["dec"])
               for s in conv_shapes(1, size))


def step_flops(shapes):
    return sum(conv_flops(s) * sum(s["step_count"].values()) for s in shapes)


# ------------------------------------------------------------------------------ devices

class Env:
    """Where things run: our kernels (CuPy or the emulator) and torch (CUDA or CPU)."""

    def __init__(self, dry_run, cudnn_benchmark):
        self.dry_run = dry_run
        try:
            import torch
        except Exception as err:
            raise UserError(f"torch is needed for the cuDNN comparison ({type(err).__name__}: {err})")
        self.torch = torch
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
        from adain_np.cuda import emulator_launcher, gpu
        if dry_run:
            self.launcher = emulator_launcher.EmulatorLauncher()
            self.cp = None
            self.tdev = "cpu"
            self.device = "CPU (dry run: emulator + torch CPU)"
        else:
            ok, reason = gpu.gpu_available()
            if not ok:
                raise UserError(f"--device gpu: no usable GPU: {reason}")
            if not torch.cuda.is_available():
                raise UserError("torch has no CUDA here; the cuDNN comparison needs it")
            self.launcher = gpu.CupyLauncher()
            self.cp = gpu.cupy
            self.tdev = "cuda"
            self.device = torch.cuda.get_device_name()
        self.xp = self.launcher.xp

    def to_torch(self, a):
        return self.torch.from_dlpack(a) if self.cp is not None else self.torch.from_numpy(a)

    def sync(self):
        if self.cp is not None:
            self.cp.cuda.Device().synchronize()
            self.torch.cuda.synchronize()

    def measure_ours(self, fn):
        """Milliseconds of fn() on our side (CUDA events on CuPy's stream, else wall clock)."""
        if self.cp is None:
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
        start, end = self.cp.cuda.Event(), self.cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return self.cp.cuda.get_elapsed_time(start, end)

    def measure_torch(self, fn):
        if self.tdev == "cpu":
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
        torch = self.torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    def free(self):
        if self.cp is not None:
            self.cp.get_default_memory_pool().free_all_blocks()
            self.torch.cuda.empty_cache()


def wall_ms(fn, sync, opts):
    """(median ms, reps) of whole calls of fn, by the host clock between two syncs: for work
    (a step, a stylize) made of many launches and host round trips."""
    def measure(f):
        sync()
        t = time.perf_counter()
        f()
        sync()
        return (time.perf_counter() - t) * 1e3
    return time_calls(measure, lambda i: fn(), 1, opts.min_time * 10, opts.min_reps, 10)


def time_calls(measure, fn, sets, min_time_s, min_reps, max_reps):
    """(median ms, reps): fn(i) rotates over input set i % sets; one warm-up call first."""
    fn(0)
    first = measure(lambda: fn(1 % sets))
    reps = int(min(max_reps, max(min_reps, min_time_s * 1e3 / max(first, 1e-3))))
    times = [measure(lambda i=i: fn(i % sets)) for i in range(reps)]
    return float(statistics.median(times)), reps


class PeakMemory:
    """High-water marks of CuPy's default pool, through a counting allocator.

    used: bytes handed out and not yet freed (compare torch.cuda.max_memory_allocated);
    total: bytes the pool holds, cached free blocks included (compare max_memory_reserved).
    """

    def __init__(self, cp):
        self.cp = cp
        self.pool = cp.get_default_memory_pool()
        self.reset()
        cp.cuda.set_allocator(self._malloc)

    def _malloc(self, size):
        memory = self.pool.malloc(size)
        self.peak_used = max(self.peak_used, self.pool.used_bytes())
        self.peak_total = max(self.peak_total, self.pool.total_bytes())
        return memory

    def reset(self):
        self.peak_used = self.pool.used_bytes()
        self.peak_total = self.pool.total_bytes()

    def close(self):
        self.cp.cuda.set_allocator(self.pool.malloc)


# ------------------------------------------------------------------------------ 1. peak

def datasheet_tflops(device):
    for key, value in DATASHEET_FP32_TFLOPS:
        if key in device:
            return value
    return None


def measure_peak(env, log):
    torch = env.torch
    n = 512 if env.dry_run else 8192
    a = torch.randn(n, n, device=env.tdev)
    b = torch.randn(n, n, device=env.tdev)
    ms, reps = time_calls(env.measure_torch, lambda i: torch.mm(a, b), 1, 0.0 if env.dry_run else 0.3,
                          1 if env.dry_run else 5, 20)
    measured = 2.0 * n ** 3 / ms / 1e9  # TFLOP/s
    result = dict(matmul_n=n, ms=ms, reps=reps, measured_tflops=measured,
                  datasheet_tflops=datasheet_tflops(env.device))
    log(f"fp32 peak: torch.mm {n}^3 (TF32 off) {measured:.1f} TFLOP/s; "
        f"datasheet {result['datasheet_tflops']} TFLOP/s ({env.device})")
    del a, b
    return result


# ------------------------------------------------------------------------------ 2. convs

def conv_versions(picked=None):
    """{op: [versions]}: all of them, or for the ops in picked ({op: {versions}}) only those."""
    from adain_np.cuda.versions import (CONV_BACKWARD_DATA_TILES, CONV_BACKWARD_WEIGHT_TILES,
                                        CONV_FORWARD_TILES)
    every = {"forward": sorted(CONV_FORWARD_TILES), "bwd_data": sorted(CONV_BACKWARD_DATA_TILES),
             "bwd_weight": sorted(CONV_BACKWARD_WEIGHT_TILES)}
    if not picked:
        return every
    return {op: [v for v in every[op] if v in picked[op]] for op in every if op in picked}


def parse_version_picks(items):
    """["forward=3", "bwd_weight=4"] -> {"forward": {3}, "bwd_weight": {4}}; UserError if unknown."""
    every = conv_versions()
    picked = {}
    for item in items or ():
        op, _, v = item.partition("=")
        if op not in every or not v.isdigit() or int(v) not in every[op]:
            raise UserError(f"--version {item!r}: expected OP=V with OP in {', '.join(every)} "
                            f"and V one of its versions")
        picked.setdefault(op, set()).add(int(v))
    return picked


def rel_err(env, got, ref):
    got = env.to_torch(got).double()
    ref = ref.detach().double()
    return float((got - ref).abs().max() / max(float(ref.abs().max()), 1e-30))


def bench_convs(env, backend, shapes, opts, log, deadline):
    """Rows: one per (shape, op, version or cuDNN)."""
    torch = env.torch
    F = torch.nn.functional
    versions = conv_versions(getattr(opts, "version_picks", None))
    rows = []
    for shape in shapes:
        N, Cin, Cout, H, W, k, relu = (shape[key] for key in ("N", "Cin", "Cout", "H", "W", "k", "relu"))
        label = f"{shape['name']} {N}x{Cin}x{H}x{W}->{Cout} k{k}"
        base = dict(layer=shape["name"], N=N, Cin=Cin, Cout=Cout, H=H, W=W, k=k, relu=relu,
                    flops=conv_flops(shape), step_count=shape["step_count"])
        if time.perf_counter() > deadline:
            log(f"time budget spent: skipping {label}")
            rows.append(dict(base, op="all", version="-", ms=float("nan"), error="skipped: time budget"))
            continue
        reflect = k == 3
        rng = np.random.default_rng(len(rows) + 1)
        sets = []
        for _ in range(opts.sets):
            x = rng.standard_normal((N, Cin, H, W), dtype=np.float32)
            w = (rng.standard_normal((Cout, Cin, k, k)) / math.sqrt(Cin * k * k)).astype(np.float32)
            b = rng.standard_normal(Cout, dtype=np.float32)
            dy = rng.standard_normal((N, Cout, H, W), dtype=np.float32)
            x, w, b, dy = (backend.asarray(a) for a in (x, w, b, dy))
            y, cache = backend.conv_forward(x, w, b, reflect, relu)
            xt, wt, bt, dyt = (env.to_torch(a) for a in (x, w, b, dy))
            xpt = F.pad(xt, (1, 1, 1, 1), mode="reflect") if reflect else xt
            sets.append(dict(x=x, w=w, b=b, dy=dy, cache=cache, xt=xt, wt=wt, bt=bt, dyt=dyt,
                             xpt=xpt))

        def torch_forward(s):
            xin = F.pad(s["xt"], (1, 1, 1, 1), mode="reflect") if reflect else s["xt"]
            out = F.conv2d(xin, s["wt"], s["bt"])
            return F.relu(out) if relu else out

        # The reference: torch fp32 autograd through pad, conv and ReLU, on set 0.
        s0 = sets[0]
        xr = s0["xt"].clone().requires_grad_(True)
        wr = s0["wt"].clone().requires_grad_(True)
        br = s0["bt"].clone().requires_grad_(True)
        yr = torch_forward(dict(xt=xr, wt=wr, bt=br))
        dxr, dwr, dbr = torch.autograd.grad(yr, (xr, wr, br), s0["dyt"])
        refs = {"forward": (yr,), "bwd_data": (dxr,), "bwd_weight": (dwr, dbr)}
        conv_bwd = torch.ops.aten.convolution_backward

        def cudnn(op):
            def run(i):
                s = sets[i]
                if op == "forward":
                    with torch.no_grad():
                        return torch_forward(s)
                mask = [True, False, False] if op == "bwd_data" else [False, True, True]
                return conv_bwd(s["dyt"], s["xpt"], s["wt"], [Cout], [1, 1], [0, 0], [1, 1], False,
                                [0, 0], 1, mask)
            return run

        def ours(op, v):
            def run(i):
                s = sets[i]
                if op == "forward":
                    return backend.conv_forward(s["x"], s["w"], s["b"], reflect, relu, version=v)[:1]
                if op == "bwd_data":
                    return backend.conv_backward(s["dy"], s["cache"], need_dw=False, data_version=v)[:1]
                return backend.conv_backward(s["dy"], s["cache"], need_dx=False, weight_version=v)[1:]
            return run

        cases = []
        for op in ("forward", "bwd_data", "bwd_weight"):
            cases.append((op, "cuDNN", cudnn(op), env.measure_torch))
            for v in versions[op]:
                cases.append((op, f"v{v}", ours(op, v), env.measure_ours))
        for op, version, run, measure in cases:
            row = dict(base, op=op, version=version)
            if version == "v1" and op == "bwd_weight" and N * H * W > NAIVE_WEIGHT_MAX_PIXELS:
                row.update(ms=float("nan"), error=f"skipped: {N * H * W} pixels per thread")
                rows.append(row)
                continue
            try:
                if version != "cuDNN":
                    outs = run(0)
                    row["max_rel_err"] = max(rel_err(env, o, r) for o, r in zip(outs, refs[op]))
                    row["ok"] = row["max_rel_err"] < REL_TOL
                    del outs
                ms, reps = time_calls(measure, run, len(sets), opts.min_time, opts.min_reps,
                                      opts.max_reps)
                row.update(ms=ms, reps=reps, gflops=row["flops"] / ms / 1e6)
            except Exception as err:  # keep going; the log has the traceback
                traceback.print_exc()
                row.update(ms=float("nan"), error=f"{type(err).__name__}: {err}"[:300])
            rows.append(row)
            log(format_conv_row(row))
        del sets, s0, xr, wr, br, yr, dxr, dwr, dbr, refs
        env.free()
    return rows


def format_conv_row(r):
    err = r.get("max_rel_err")
    check = "" if err is None else f" err {err:.1e}{'' if r.get('ok') else ' FAIL'}"
    extra = f"  [{r['error']}]" if "error" in r else ""
    gflops = r.get("gflops", float("nan"))
    return (f"{r['layer']:<22s} {r['op']:<10s} {r['version']:<5s} {r['ms']:9.3f} ms "
            f"{gflops:9.0f} GFLOP/s{check}{extra}")


def tuned_table(rows):
    """{(op, Cin, Cout, H, W, k): version}: the fastest checked version of ours per shape and op."""
    best = {}
    for r in rows:
        if not r["version"].startswith("v") or not r.get("ok") or not math.isfinite(r["ms"]):
            continue
        key = (r["op"], r["Cin"], r["Cout"], r["H"], r["W"], r["k"])
        if key not in best or r["ms"] < best[key][1]:
            best[key] = (int(r["version"][1:]), r["ms"])
    return {key: v for key, (v, _) in best.items()}


def conv_summary(rows):
    """Per op: cuDNN ms, our best-per-shape ms and each version's ms, summed over the shapes
    that have all of them; also weighted by how often a training step runs each op."""
    summary = {}
    for op in ("forward", "bwd_data", "bwd_weight"):
        by_shape = {}
        for r in rows:
            if r["op"] == op and math.isfinite(r.get("ms", float("nan"))) and (
                    r["version"] == "cuDNN" or r.get("ok")):
                by_shape.setdefault(r["layer"], {})[r["version"]] = (r["ms"], r["step_count"][op])
        cudnn = best = cudnn_step = best_step = 0.0
        per_version = {}
        for layer, times in by_shape.items():
            ours = {v: t for v, t in times.items() if v != "cuDNN"}
            if "cuDNN" not in times or not ours:
                continue
            count = times["cuDNN"][1]
            fastest = min(t for t, _ in ours.values())
            cudnn += times["cuDNN"][0]
            best += fastest
            cudnn_step += count * times["cuDNN"][0]
            best_step += count * fastest
            for v, (t, _) in ours.items():
                per_version.setdefault(v, []).append(t)
        summary[op] = dict(cudnn_ms=cudnn, ours_best_ms=best,
                           throughput_vs_cudnn=cudnn / best if best else float("nan"),
                           step_weighted_cudnn_ms=cudnn_step, step_weighted_ours_ms=best_step,
                           per_version_ms={v: sum(t) for v, t in per_version.items()},
                           per_version_shapes={v: len(t) for v, t in per_version.items()})
    return summary


# ------------------------------------------------------------------------------ 3-4. step, stylize

def bench_step(env, shapes, tuned, opts, log):
    import adain_np
    from adain_np.cuda.kernel_backend import KernelBackend
    from adain_np.optim import Adam
    from torch_reference import TorchNet
    torch = env.torch
    vgg, dec = adain_np.init_vgg_params(0), adain_np.init_decoder_params(0)
    rng = np.random.default_rng(1)
    shape = (opts.batch, 3, opts.size, opts.size)
    content = rng.random(shape, dtype=np.float32)
    style = rng.random(shape, dtype=np.float32)
    flops = step_flops(shapes)
    result = dict(shape=list(shape), conv_flops=flops)

    for label, table in (("ours", {}), ("ours_tuned", tuned)):
        env.free()
        peak = PeakMemory(env.cp) if env.cp is not None else None
        try:
            backend = KernelBackend(env.launcher, tuned_versions=table)
            net = adain_np.Net(vgg, dec, backend)
            opt = Adam(net.decoder_params, lr=1e-4, backend=backend)
            c_dev, s_dev = backend.asarray(content), backend.asarray(style)
            losses = []

            def step():
                losses.append(net.forward(c_dev, s_dev))
                opt.step(net.backward())

            ms, n = wall_ms(step, env.sync, opts)
            result[label] = dict(ms=ms, reps=n, gflops=flops / ms / 1e6, first_losses=losses[0],
                                 peak_used_mb=peak and peak.peak_used / 2**20,
                                 peak_pool_mb=peak and peak.peak_total / 2**20)
        except Exception as err:
            traceback.print_exc()
            result[label] = dict(ms=float("nan"), error=f"{type(err).__name__}: {err}"[:300])
        finally:
            if peak is not None:
                peak.close()
            net = opt = c_dev = s_dev = None
        log(f"step {label}: {result[label]}")
        if not tuned:
            break

    env.free()
    if env.tdev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        tnet = TorchNet(vgg, dec).to(env.tdev)
        topt = torch.optim.Adam(tnet.decoder.parameters(), lr=1e-4)
        ct, st = torch.tensor(content, device=env.tdev), torch.tensor(style, device=env.tdev)
        tlosses = []

        def torch_step():
            topt.zero_grad()
            loss_c, loss_s = tnet(ct, st)
            (loss_c + 10 * loss_s).backward()
            topt.step()
            tlosses.append((loss_c.item(), loss_s.item()))

        sync = torch.cuda.synchronize if env.tdev == "cuda" else (lambda: None)
        ms, n = wall_ms(torch_step, sync, opts)
        result["torch"] = dict(ms=ms, reps=n, gflops=flops / ms / 1e6, first_losses=tlosses[0])
        if env.tdev == "cuda":
            result["torch"].update(peak_used_mb=torch.cuda.max_memory_allocated() / 2**20,
                                   peak_pool_mb=torch.cuda.max_memory_reserved() / 2**20)
    except Exception as err:
        traceback.print_exc()
        result["torch"] = dict(ms=float("nan"), error=f"{type(err).__name__}: {err}"[:300])
    log(f"step torch: {result['torch']}")
    # The first step of each starts from the same weights: its losses must agree.
    if "first_losses" in result.get("ours", {}) and "first_losses" in result["torch"]:
        (oc, os_), (tc, ts) = result["ours"]["first_losses"], result["torch"]["first_losses"]
        result["loss_rel_err"] = max(abs(oc - tc) / abs(tc), abs(os_ - ts) / abs(ts))
        result["ok"] = result["loss_rel_err"] < REL_TOL
    env.free()
    return result


def bench_stylize(env, opts, log):
    import adain_np
    from adain_np.cuda.kernel_backend import KernelBackend
    from torch_reference import TorchNet, adaptive_instance_normalization
    torch = env.torch
    vgg, dec = adain_np.init_vgg_params(0), adain_np.init_decoder_params(0)
    rng = np.random.default_rng(2)
    shape = (1, 3, opts.stylize_size, opts.stylize_size)
    content = rng.random(shape, dtype=np.float32)
    style = rng.random(shape, dtype=np.float32)
    flops = stylize_flops(opts.stylize_size)
    result = dict(shape=list(shape), conv_flops=flops)
    sync_t = torch.cuda.synchronize if env.tdev == "cuda" else (lambda: None)

    env.free()
    try:
        net = adain_np.Net(vgg, dec, KernelBackend(env.launcher))
        out = net.style_transfer(content, style)  # host array
        ms, n = wall_ms(lambda: net.style_transfer(content, style), env.sync, opts)
        result["ours"] = dict(ms=ms, reps=n, gflops=flops / ms / 1e6)
        tnet = TorchNet(vgg, dec).to(env.tdev)

        def torch_stylize():
            with torch.no_grad():
                ct = torch.tensor(content, device=env.tdev)
                st = torch.tensor(style, device=env.tdev)
                return tnet.decoder(adaptive_instance_normalization(tnet.encode(ct),
                                                                    tnet.encode(st))).cpu().numpy()

        ref = torch_stylize()
        ms, n = wall_ms(torch_stylize, sync_t, opts)
        result["torch"] = dict(ms=ms, reps=n, gflops=flops / ms / 1e6)
        result["rel_err"] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
        result["ok"] = result["rel_err"] < REL_TOL
    except Exception as err:
        traceback.print_exc()
        result["error"] = f"{type(err).__name__}: {err}"[:300]
    log(f"stylize: {result}")
    env.free()
    return result


# ------------------------------------------------------------------------------ report

def summary_table(results):
    peak = results["peak"]
    peak_tf = peak["measured_tflops"]
    lines = [f"device: {results['device']}  (fp32, TF32 off, cudnn.benchmark="
             f"{results['cudnn_benchmark']}; medians; batch {results['batch']}, {results['size']}^2)",
             f"fp32 peak: measured {peak_tf:.1f} TFLOP/s (torch.mm {peak['matmul_n']}^3), "
             f"datasheet {peak['datasheet_tflops']} TFLOP/s",
             "",
             f"{'conv op':<11s} {'cuDNN ms':>9s} {'ours ms':>9s} {'ours/cuDNN thr':>14s} "
             f"{'step-weighted cuDNN/ours ms':>28s}   per version (ms summed; shapes)"]
    for op, s in results["conv_summary"].items():
        versions = ", ".join(f"{v} {t:.2f} ({results['conv_summary'][op]['per_version_shapes'][v]})"
                             for v, t in sorted(s["per_version_ms"].items()))
        lines.append(f"{op:<11s} {s['cudnn_ms']:9.3f} {s['ours_best_ms']:9.3f} "
                     f"{100 * s['throughput_vs_cudnn']:13.0f}% "
                     f"{s['step_weighted_cudnn_ms']:13.2f} / {s['step_weighted_ours_ms']:<12.2f}   {versions}")
    lines.append("")
    lines.append(f"{'work':<26s} {'ms':>9s} {'GFLOP/s':>9s} {'% peak':>7s} {'x torch time':>12s} "
                 f"{'peak used MB':>12s} {'pool MB':>8s}")
    for work in ("step", "stylize"):
        res = results.get(work, {})
        torch_ms = res.get("torch", {}).get("ms", float("nan"))
        for who in ("ours", "ours_tuned", "torch"):
            r = res.get(who)
            if not r:
                continue
            gflops = r.get("gflops", float("nan"))
            used, pool = r.get("peak_used_mb"), r.get("peak_pool_mb")
            lines.append(f"{work + ' ' + who:<26s} {r['ms']:9.2f} {gflops:9.0f} "
                         f"{100 * gflops / 1e3 / peak_tf:6.0f}% {r['ms'] / torch_ms:12.2f} "
                         f"{'-' if used is None else f'{used:.0f}':>12s} "
                         f"{'-' if pool is None else f'{pool:.0f}':>8s}"
                         + (f"  [{r['error']}]" if "error" in r else ""))
    step = results.get("step", {})
    if "loss_rel_err" in step:
        lines.append(f"step losses vs torch: rel err {step['loss_rel_err']:.1e}; "
                     f"stylize vs torch: rel err {results.get('stylize', {}).get('rel_err', float('nan')):.1e}")
    failed = results["failures"]
    lines.append(f"checks: {'all passed' if not failed else f'{len(failed)} FAILED: ' + '; '.join(failed[:8])}")
    return "\n".join(lines)


def failures(results):
    out = []
    for r in results.get("convs", []):
        if "error" in r and not r["error"].startswith("skipped"):
            out.append(f"{r['layer']} {r['op']} {r['version']}: {r['error'][:80]}")
        elif r.get("ok") is False:
            out.append(f"{r['layer']} {r['op']} {r['version']}: rel err {r['max_rel_err']:.1e}")
    for work in ("step", "stylize"):
        res = results.get(work, {})
        if res.get("ok") is False:
            out.append(f"{work}: result differs from torch")
        for who in ("ours", "ours_tuned", "torch"):
            if "error" in res.get(who, {}):
                out.append(f"{work} {who}: {res[who]['error'][:80]}")
        if "error" in res:
            out.append(f"{work}: {res['error'][:80]}")
    return out


def _json_safe(obj):
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else repr(k)): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m adain_np.bench --device gpu",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="gpu", choices=["gpu"],
                        help="accepted for adain_np.bench's sake; always gpu (see --dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU only: emulator kernels, torch on the CPU, tiny shapes")
    parser.add_argument("--batch", type=int, default=None, help="default 8 (dry run: 1)")
    parser.add_argument("--size", type=int, default=None, help="training image side, default 256 "
                        "(dry run: 16); a multiple of 8")
    parser.add_argument("--stylize-size", type=int, default=None, help="default 512 (dry run: 16)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN search algorithms (pytorch-AdaIN leaves it off)")
    parser.add_argument("--only", nargs="+", default=["convs", "step", "stylize"],
                        choices=["convs", "step", "stylize"], help="what to run (default: all)")
    parser.add_argument("--version", nargs="+", metavar="OP=V",
                        help="time only these conv versions, e.g. forward=3 bwd_weight=4 "
                             "(op: forward, bwd_data, bwd_weight; default: every version)")
    parser.add_argument("--sets", type=int, default=None, help="input sets rotated per conv case "
                        "(default 3; dry run 2)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds of repeats per conv case (default 0.08; step/stylize x10)")
    parser.add_argument("--time-budget", type=float, default=200.0,
                        help="seconds; conv shapes stop starting after budget - 60 (default 200)")
    parser.add_argument("--out", default=os.environ.get("OUT") or None,
                        help="directory for bench_gpu.json and bench_gpu.txt (default $OUT)")
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.batch = args.batch or (1 if dry else 8)
    args.size = args.size or (16 if dry else 256)
    args.stylize_size = args.stylize_size or (16 if dry else 512)
    args.sets = args.sets or (2 if dry else 3)
    args.version_picks = parse_version_picks(args.version)
    args.min_time = (0.0 if dry else 0.08) if args.min_time is None else args.min_time
    args.min_reps, args.max_reps = (1, 1) if dry else (5, 50)
    for name in ("batch", "size", "stylize_size", "sets"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("size", "stylize_size"):
        if getattr(args, name) % 8 or getattr(args, name) < 16:
            raise UserError(f"--{name.replace('_', '-')} must be a multiple of 8, at least 16")
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    t0 = time.perf_counter()
    deadline = t0 + max(0.0, args.time_budget - 60)
    env = Env(dry, args.cudnn_benchmark)
    lines = []

    def log(line):
        lines.append(line)
        print(line, flush=True)

    log(f"tools/bench_gpu.py on {env.device}; torch {env.torch.__version__}; "
        f"{'emulator' if dry else 'cupy ' + env.cp.__version__}")
    results = dict(device=env.device, dry_run=dry, batch=args.batch, size=args.size,
                   stylize_size=args.stylize_size, cudnn_benchmark=args.cudnn_benchmark,
                   rel_tol=REL_TOL, sets=args.sets)
    results["peak"] = measure_peak(env, log)
    shapes = conv_shapes(args.batch, args.size)
    from adain_np.cuda.kernel_backend import KernelBackend
    backend = KernelBackend(env.launcher)
    results["convs"] = []
    if "convs" in args.only:
        results["convs"] = bench_convs(env, backend, shapes, args, log, deadline)
    results["conv_summary"] = conv_summary(results["convs"])
    tuned = tuned_table(results["convs"])
    results["tuned_versions"] = [dict(op=k[0], Cin=k[1], Cout=k[2], H=k[3], W=k[4], k=k[5], version=v)
                                 for k, v in sorted(tuned.items())]
    if "step" in args.only:
        results["step"] = bench_step(env, shapes, tuned, args, log)
    if "stylize" in args.only:
        results["stylize"] = bench_stylize(env, args, log)
    results["failures"] = failures(results)
    results["seconds"] = time.perf_counter() - t0
    table = summary_table(results)
    log(f"\n{table}\n(total {results['seconds']:.0f} s)")
    if args.out:
        with atomic_path(os.path.join(args.out, "bench_gpu.json")) as tmp:
            with open(tmp, "w") as f:
                json.dump(_json_safe(results), f, indent=1)
        with atomic_path(os.path.join(args.out, "bench_gpu.txt")) as tmp:
            with open(tmp, "w") as f:
                f.write("\n".join(lines) + "\n")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
