#!/usr/bin/env bash
# The one script for a lent GPU machine: kernel tests + conv timings (gpu_check.sh), then a
# whole training step and a stylize against torch (gpu_step.py). Logs under $OUT.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-device_out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="$OUT" timeout 330 bash tools/gpu_check.sh > "$OUT/gpu_check.out" 2>&1; echo "gpu_check exit $?"
OUT="$OUT" timeout 150 python3 tools/gpu_step.py > "$OUT/gpu_step.out" 2>&1; echo "gpu_step exit $?"
echo "===== gpu_check (tail)"; tail -n 45 "$OUT/gpu_check.out"
echo "===== gpu_step (tail)"; tail -n 12 "$OUT/gpu_step.out"
