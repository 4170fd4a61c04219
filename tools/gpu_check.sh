#!/usr/bin/env bash
# GPU check for the CUDA kernels, for a lent H100/H200 (python3 with numpy, cupy-cuda13x,
# torch, pytest preinstalled; no network, no installs). Run from the repository root:
#
#     OUT=/some/dir tools/gpu_check.sh
#
# 1. registers/spills of every kernel (python -m adain_np.compile_check)  -> $OUT/compile_check.log
# 2. every kernel version against the NumPy reference on the GPU
#    (pytest -m gpu tests/test_kernels.py)                               -> $OUT/pytest_gpu.log
# 3. each conv kernel version on VGG layer shapes at batch 8, 256x256 input, timed with
#    CUDA events (warm-up, then the median of several runs), beside torch/cuDNN fp32 with
#    TF32 off; each result is also compared with torch's            -> $OUT/timings.{txt,json}
# The timing table is printed last. Each step has its own time limit; the whole script
# stays under 5 minutes. Exit status: non-zero if the GPU tests or the timing step failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
status=0

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$OUT/device.txt"

echo "== compile_check (registers, spills)"
timeout 45 "$PY" -m adain_np.compile_check > "$OUT/compile_check.log" 2>&1
echo "exit $? (table in $OUT/compile_check.log)"

echo "== pytest -m gpu tests/test_kernels.py"
timeout 120 "$PY" -m pytest -m gpu tests/test_kernels.py -q -p no:cacheprovider -rs \
    > "$OUT/pytest_gpu.log" 2>&1
rc=$?
tail -n 3 "$OUT/pytest_gpu.log"
if [ $rc -ne 0 ]; then status=1; echo "GPU TESTS FAILED (exit $rc), see $OUT/pytest_gpu.log"; fi

echo "== conv timings"
OUT="$OUT" timeout 120 "$PY" - > "$OUT/timings.log" 2>&1 <<'PYEOF'
import json
import math
import os
import sys
import time
import traceback

import cupy
import numpy as np
import torch
import torch.nn.functional as F

from adain_np.gpu import CupyLauncher
from adain_np.kernel_backend import (CONV_BACKWARD_DATA_TILES, CONV_BACKWARD_WEIGHT_TILES,
                                     CONV_FORWARD_TILES, KernelBackend)

OUT = os.environ["OUT"]
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest algorithm per shape

N = 8
# (layer, Cin, Cout, H=W, relu): the VGG encoder at 256x256 input, and decoder ends.
SHAPES = [("enc conv1_1", 3, 64, 256, True), ("enc conv1_2", 64, 64, 256, True),
          ("enc conv2_1", 64, 128, 128, True), ("enc conv2_2", 128, 128, 128, True),
          ("enc conv3_1", 128, 256, 64, True), ("enc conv3_2", 256, 256, 64, True),
          ("enc conv4_1", 256, 512, 32, True), ("dec conv4_1", 512, 256, 32, True),
          ("dec conv1_2", 64, 3, 256, False)]
NAIVE_WEIGHT_MAX_PIXELS = 32768  # v1 backward-weight loops over N*H*W per thread: too slow above
TIME_PER_CASE = 0.15             # seconds of repeated runs per measurement


def cupy_time(fn):
    fn()  # warm-up (and compile)
    cupy.cuda.Device().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record(); fn(); end.record(); end.synchronize()
    first = cupy.cuda.get_elapsed_time(start, end) / 1e3
    reps = int(min(15, max(3, TIME_PER_CASE / max(first, 1e-6))))
    times = []
    for _ in range(reps):
        start.record(); fn(); end.record(); end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return float(np.median(times)), reps


def torch_time(fn):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(); fn(); end.record(); end.synchronize()
    first = start.elapsed_time(end) / 1e3
    reps = int(min(15, max(3, TIME_PER_CASE / max(first, 1e-6))))
    times = []
    for _ in range(reps):
        start.record(); fn(); end.record(); end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times)), reps


def rel_err(got, ref):
    got = cupy.asnumpy(got).astype(np.float64) if isinstance(got, cupy.ndarray) else got
    ref = ref.detach().double().cpu().numpy()
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


backend = KernelBackend(CupyLauncher())
rows = []
device = torch.cuda.get_device_name()
print("device:", device, "| torch", torch.__version__, "| cupy", cupy.__version__, flush=True)
t_start = time.time()
for layer, cin, cout, hw, relu in SHAPES:
    if time.time() - t_start > 95:
        print("time budget spent; stopping before", layer, flush=True)
        break
    rng = np.random.default_rng(0)
    x_h = rng.standard_normal((N, cin, hw, hw), dtype=np.float32)
    w_h = (rng.standard_normal((cout, cin, 3, 3)) / math.sqrt(cin * 9)).astype(np.float32)
    b_h = rng.standard_normal(cout, dtype=np.float32)
    dy_h = rng.standard_normal((N, cout, hw, hw), dtype=np.float32)
    x, w, b, dy = (backend.asarray(a) for a in (x_h, w_h, b_h, dy_h))
    xt = torch.tensor(x_h, device="cuda", requires_grad=True)
    wt = torch.tensor(w_h, device="cuda", requires_grad=True)
    bt = torch.tensor(b_h, device="cuda", requires_grad=True)
    dyt = torch.tensor(dy_h, device="cuda")

    def torch_forward():
        y = F.conv2d(F.pad(xt, (1, 1, 1, 1), mode="reflect"), wt, bt)
        return F.relu(y) if relu else y

    yt = torch_forward()
    xg, wg, bg = torch.autograd.grad(yt, (xt, wt, bt), dyt)
    flops = 2.0 * N * hw * hw * cout * cin * 9
    shape = f"{N}x{cin}x{hw}x{hw} -> {cout}"

    def record(op, version, fn, check=None, ref=None, timer=cupy_time):
        try:
            out = fn()
            err = rel_err(check(out), ref) if check else float("nan")
            ms, reps = timer(fn)
            rows.append(dict(layer=layer, shape=shape, op=op, version=version, ms=ms, reps=reps,
                             tflops=flops / ms / 1e9, max_rel_err=err))
        except Exception as e:  # keep the table going; the log has the traceback
            traceback.print_exc()
            rows.append(dict(layer=layer, shape=shape, op=op, version=version, ms=float("nan"),
                             reps=0, tflops=float("nan"), max_rel_err=float("nan"),
                             error=f"{type(e).__name__}: {e}"[:200]))
        print(rows[-1], flush=True)

    with torch.no_grad():
        record("forward", "cuDNN", torch_forward, timer=torch_time)
    xpt = F.pad(xt.detach(), (1, 1, 1, 1), mode="reflect")
    conv_bwd = torch.ops.aten.convolution_backward
    record("bwd data", "cuDNN", lambda: conv_bwd(dyt, xpt, wt.detach(), [cout], [1, 1], [0, 0],
                                                  [1, 1], False, [0, 0], 1, [True, False, False]),
           timer=torch_time)
    record("bwd weight", "cuDNN", lambda: conv_bwd(dyt, xpt, wt.detach(), [cout], [1, 1], [0, 0],
                                                    [1, 1], False, [0, 0], 1, [False, True, True]),
           timer=torch_time)
    for v in sorted(CONV_FORWARD_TILES):
        record("forward", f"v{v}", lambda v=v: backend.conv_forward(x, w, b, True, relu, version=v),
               check=lambda out: out[0], ref=yt)
    _, cache = backend.conv_forward(x, w, b, True, relu, version=1)
    for v in sorted(CONV_BACKWARD_DATA_TILES):
        record("bwd data", f"v{v}",
               lambda v=v: backend.conv_backward(dy, cache, need_dw=False, data_version=v),
               check=lambda out: out[0], ref=xg)
    for v in sorted(CONV_BACKWARD_WEIGHT_TILES):
        if v == 1 and N * hw * hw > NAIVE_WEIGHT_MAX_PIXELS:
            rows.append(dict(layer=layer, shape=shape, op="bwd weight", version="v1", ms=float("nan"),
                             reps=0, tflops=float("nan"), max_rel_err=float("nan"),
                             error=f"skipped: {N * hw * hw} pixels per thread"))
            continue
        record("bwd weight", f"v{v}",
               lambda v=v: backend.conv_backward(dy, cache, need_dx=False, weight_version=v),
               check=lambda out: out[1], ref=wg)
    del x, w, b, dy, cache, xt, wt, bt, dyt, yt, xg, wg, bg, xpt
    cupy.get_default_memory_pool().free_all_blocks()
    torch.cuda.empty_cache()

with open(os.path.join(OUT, "timings.json"), "w") as f:
    json.dump(dict(device=device, batch=N, rows=rows), f, indent=1)

# The table: per layer and op, each version's median ms, TFLOP/s, ratio to cuDNN, max rel error.
lines = [f"device: {device}; batch {N}; fp32, TF32 off; median of CUDA-event timings",
         f"{'layer':12s} {'op':10s} {'ver':5s} {'ms':>8s} {'TFLOP/s':>7s} {'xcuDNN':>6s} {'relerr':>8s}"]
cudnn = {(r["layer"], r["op"]): r["ms"] for r in rows if r["version"] == "cuDNN"}
for r in rows:
    ratio = r["ms"] / cudnn.get((r["layer"], r["op"]), float("nan"))
    note = f"  {r['error']}" if "error" in r else ""
    lines.append(f"{r['layer']:12s} {r['op']:10s} {r['version']:5s} {r['ms']:8.3f} {r['tflops']:7.2f} "
                 f"{ratio:6.2f} {r['max_rel_err']:8.1e}{note}")
table = "\n".join(lines)
with open(os.path.join(OUT, "timings.txt"), "w") as f:
    f.write(table + "\n")
print("\n" + table)
PYEOF
rc=$?
if [ $rc -ne 0 ]; then status=1; echo "TIMING STEP FAILED (exit $rc), see $OUT/timings.log"; tail -n 20 "$OUT/timings.log"; fi

echo "== compile_check summary"
grep -E "FAIL|error" "$OUT/compile_check.log" || echo "all kernels compiled; no must-not-spill kernel spills"
echo "== conv timings (also in $OUT/timings.txt)"
[ -f "$OUT/timings.txt" ] && cat "$OUT/timings.txt"
exit $status
