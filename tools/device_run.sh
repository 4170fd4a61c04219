#!/usr/bin/env bash
# The one script for a GPU machine (about 5-6 minutes on an H200). Logs under $OUT.
#   1. tools/gpu_predictions.py: the three predictions first (bias v2/v3/fused weight v9 at
#      Cout=64 8x256^2; relu=True vs relu=False on 64->64@256^2; split_k vs split_k_by_waves
#      on 256->256@64^2), then cuDNN with allow_tf32=True + benchmark=True on the four
#      heaviest shapes                                       -> $OUT/predictions.log, .json
#   2. tools/gpu_check.sh: compile_check, the kernel tests on the GPU, bench_gpu.py (every
#      version per shape against cuDNN, the step and stylize with peak memory)
#                                                            -> $OUT/gpu_check.out + its files
#   3. compute-sanitizer racecheck, synccheck and memcheck on two small conv tests
#                                                            -> $OUT/sanitizer_*.log
#
# compute-sanitizer is not on the lent machine and it has no network: carry it. Here, once:
#     .venv/bin/pip download --no-deps -d .sanitizer_wheel nvidia-cuda-sanitizer-api
#     mkdir -p .sanitizer && (cd .sanitizer && python3 -m zipfile -e ../.sanitizer_wheel/*.whl .)
#     du -sh .sanitizer        # 53 MB for 13.5.25 (the only 13.x this index serves; no 13.0.*):
#                              # it fits the 64 MiB carry limit only if carried alone
# (.sanitizer/ and .sanitizer_wheel/ are git-ignored). The launcher is
# .sanitizer/nvidia/cu13/bin/compute-sanitizer.
# The script finds compute-sanitizer under .sanitizer/ (or on PATH, or in the installed
# wheel); if none is found, step 3 says so and is counted as a failure, not skipped silently.
# Unverified: whether sanitizer 13.5 runs under the lent machine's driver (CUDA 13.0 era).
#
#     bash tools/device_run.sh [predictions] [check] [sanitizer]   (default: all three)
# Time limits: predictions 70 s, check 420 s (gpu_check.sh: typically 4-5 min, 7 at most),
# sanitizer 3 x 40 s. All three can pass one run() call's 600 s limit, so run two calls:
#     run(command="bash tools/device_run.sh predictions sanitizer", carry=[".sanitizer"], timeout_s=200)
#     run(command="bash tools/device_run.sh check", timeout_s=440)
# Exit status: non-zero if any step failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-device_out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
status=0
STEPS="${*:-predictions check sanitizer}"
want() { case " $STEPS " in *" $1 "*) return 0;; *) return 1;; esac; }

if want predictions; then
echo "===== 1. predictions (bias, relu, splits, tf32)"
timeout 70 "$PY" tools/gpu_predictions.py --out "$OUT" > "$OUT/predictions.log" 2>&1
rc=$?; echo "predictions exit $rc"; [ $rc -eq 0 ] || status=1
cat "$OUT/predictions.log"
fi

if want check; then
echo "===== 2. gpu_check (compile_check, GPU kernel tests, bench_gpu)"
OUT="$OUT" timeout 420 bash tools/gpu_check.sh > "$OUT/gpu_check.out" 2>&1
rc=$?; echo "gpu_check exit $rc"; [ $rc -eq 0 ] || status=1
tail -n 60 "$OUT/gpu_check.out"
fi

if want sanitizer; then
echo "===== 3. compute-sanitizer on two small conv tests"
SAN="$(find .sanitizer -path '*/bin/compute-sanitizer' 2>/dev/null | head -n 1)"  # the wheel's launcher
[ -n "$SAN" ] || SAN="$(command -v compute-sanitizer || true)"
[ -n "$SAN" ] || SAN="$("$PY" -c 'import glob, os, nvidia; print(next(iter(glob.glob(os.path.join(nvidia.__path__[0], "**", "compute-sanitizer"), recursive=True)), ""))' 2>/dev/null)"
if [ -z "$SAN" ]; then
    echo "compute-sanitizer NOT FOUND (carry .sanitizer, see the header): step 3 not run"
    status=1
else
    # python -m zipfile drops the exec bits: restore them on the launcher and the binaries it runs.
    chmod +x "$SAN" 2>/dev/null
    [ -d "$(dirname "$SAN")/../compute-sanitizer" ] && chmod -R u+x "$(dirname "$SAN")/../compute-sanitizer"
    # Two small conv tests on the GPU: forward + backward-data/weight of every version
    # (the default-version test runs each version once at a small shape) and fused db.
    TESTS="tests/test_kernels.py::test_conv_default_versions_and_relu_mask[gpu] tests/test_kernels.py::test_conv_backward_bias"
    for tool in racecheck synccheck memcheck; do
        timeout 40 "$SAN" --tool "$tool" --error-exitcode 99 --target-processes all \
            "$PY" -m pytest -q -p no:cacheprovider -m gpu -k "gpu" $TESTS \
            > "$OUT/sanitizer_$tool.log" 2>&1
        rc=$?
        echo "compute-sanitizer --tool $tool exit $rc ($(grep -cE '^========= (Error|ERROR)|Race reported|Barrier error' "$OUT/sanitizer_$tool.log") error lines)"
        tail -n 4 "$OUT/sanitizer_$tool.log"
        [ $rc -eq 0 ] || status=1
    done
fi
fi
echo "device_run exit $status"
exit $status
