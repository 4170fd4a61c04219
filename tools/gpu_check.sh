#!/usr/bin/env bash
# GPU check for the CUDA kernels, for a lent H100/H200 (python3 with numpy, cupy-cuda13x,
# torch, pytest preinstalled; no network, no installs). Run from the repository root:
#
#     OUT=/some/dir tools/gpu_check.sh
#
# 1. registers/spills of every kernel (python -m adain_np.compile_check)  -> $OUT/compile_check.log
# 2. every kernel version against the NumPy reference on the GPU
#    (pytest -m gpu tests/test_kernels.py)                               -> $OUT/pytest_gpu.log
# 3. python tools/bench_gpu.py: every conv kernel version on every distinct VGG encoder/
#    decoder conv shape at batch 8, 256x256, checked against torch and timed with CUDA
#    events beside torch/cuDNN fp32 (TF32 off); the training step (default and tuned
#    version picking) and stylize 1x512x512 vs torch, with peak memory
#    -> $OUT/bench_gpu.{json,txt,log}. BENCH_ARGS adds flags (e.g. --cudnn-benchmark).
# The summary table is printed last. Each step has its own time limit; the whole script
# stays under 7 minutes (typically ~4-5). Exit status: non-zero if the GPU tests, the
# benchmark or one of its checks failed.
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

echo "== benchmark: python tools/bench_gpu.py (convs, step, stylize vs torch/cuDNN)"
# Conv shapes stop starting at (time budget - 60) s; step and stylize follow. ~3-4 min on an H200.
OUT="$OUT" timeout 250 "$PY" tools/bench_gpu.py --out "$OUT" --time-budget 170 ${BENCH_ARGS:-} \
    > "$OUT/bench_gpu.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then status=1; echo "BENCHMARK FAILED OR A CHECK FAILED (exit $rc), see $OUT/bench_gpu.log"; fi

echo "== compile_check summary"
grep -E "FAIL|error" "$OUT/compile_check.log" || echo "all kernels compiled; no must-not-spill kernel spills"
echo "== benchmark summary (full log $OUT/bench_gpu.log, results $OUT/bench_gpu.json)"
sed -n '/^device: /,$p' "$OUT/bench_gpu.log" | tail -n 30
exit $status
