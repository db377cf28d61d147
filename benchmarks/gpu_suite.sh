#!/usr/bin/env bash
# The GPU suite: one command for a bare GPU machine (made for an H200 with Python 3.12, torch 2.11 + CUDA 13,
# triton 3.6, nvcc 13, pytest; no internet). It
#   1. builds the C++/CUDA extension (pip install -e . --no-build-isolation --no-deps), in the background,
#      while the Triton GPU tests run; a failed build is reported and the suite goes on without "cuda";
#   2. runs the GPU tests (tests/gpu: triton and cuda backends against the float64 reference at big sizes);
#   3. runs the op and model benchmarks (benchmarks/run.py --preset gpu-suite);
#   4. prints a short table last, with the compiled-code summary of the kernels next to the benchmark table
#      (nf_kernels.benchmarking.gpu_code: their sm_90 SASS, compiled in the background while steps 1-2 run, and a
#      check that the kernels it read are the ones the real launches compiled on this GPU).
# Everything goes under OUT_DIR/all while it runs: one log per step, steps.tsv (step, exit code, seconds), junit
# XML, and the benchmark results (<machine>-<date>.md/.json/-summary.md/-<dtype>.png). At the end all/ is packed
# into OUT_DIR/gpu_suite_all.tar.gz and the results and steps.tsv are copied up: eight files at most, what a
# device run brings back. Every step has a time limit, and the whole suite ends within NF_SUITE_SECONDS
# (default 450, under the 8 minutes it is allowed).
#
#   bash benchmarks/gpu_suite.sh OUT_DIR                 # on the GPU machine
#   bash benchmarks/gpu_suite.sh OUT_DIR --cpu-dry-run   # anywhere: the same steps on the CPU, tiny sizes,
#                                                        # no install (checks the script's paths, not the GPU)
set -u -o pipefail

usage() { echo "usage: bash benchmarks/gpu_suite.sh OUT_DIR [--cpu-dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1
DRY_RUN=0
case "${2:-}" in
  "") ;;
  --cpu-dry-run) DRY_RUN=1 ;;
  *) usage ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
mkdir -p "$OUT/all" || exit 1
OUT=$(cd "$OUT" && pwd)
TOP=$OUT
OUT=$TOP/all  # every step writes here; packed and summarized into TOP at the end
PYTHON=${PYTHON:-python3}
BUDGET=${NF_SUITE_SECONDS:-450}
SECONDS=0
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TRITON_INTERPRET=0  # compiled kernels; tests/conftest.py would otherwise turn the interpreter on
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
else
  DEVICE=cuda
  if ! command -v nvcc > /dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  fi
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # the H200 only: half the nvcc time of 8.0;9.0
  export MAX_JOBS=${MAX_JOBS:-12}  # leave cores to the Triton tests that run during the build
fi

printf 'step\texit\tseconds\n' > "$OUT/steps.tsv"

# run_step NAME LIMIT_S COMMAND...: run with a time limit, log to OUT/NAME.log, record the exit code (124: timed out).
run_step() {
  local name=$1 limit=$2 start=$SECONDS code
  shift 2
  if [ "$limit" -lt 5 ]; then
    echo "== $name: skipped, the suite's time budget is spent" | tee "$OUT/$name.log"
    printf '%s\tskipped\t0\n' "$name" >> "$OUT/steps.tsv"
    return 0
  fi
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  code=$?
  printf '%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" >> "$OUT/steps.tsv"
  tail -n 4 "$OUT/$name.log" | sed 's/^/   /'
  return 0
}

left() { echo $((BUDGET - SECONDS - $1)); }  # seconds left in the budget, keeping $1 for what follows

# 0. What machine this is.
run_step environment 30 bash -c "nvidia-smi || echo 'nvidia-smi: not available'; nvcc --version || echo 'nvcc: not available';
  $PYTHON -c 'import sys, torch, triton; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); print(\"triton\", triton.__version__); print(torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU\")'"

# 1. Build the extension in the background; the Triton tests need no extension and run meanwhile.
BUILD_LIMIT=220
if [ "$DRY_RUN" = 1 ]; then
  BUILD_CMD=(echo "dry run: would run: $PYTHON -m pip install -e . --no-build-isolation --no-deps")
else
  BUILD_CMD=("$PYTHON" -m pip install -e . --no-build-isolation --no-deps --no-input -v)
fi
echo "== build (limit ${BUILD_LIMIT}s, background): ${BUILD_CMD[*]}"
BUILD_START=$SECONDS
timeout --kill-after=10 "$BUILD_LIMIT" "${BUILD_CMD[@]}" > "$OUT/build.log" 2>&1 &
BUILD_PID=$!

# The compiled-code report: CPU work (Triton's and nvcc's compilers) plus a few small launches on the GPU to check
# it read the kernels that run; in the background, done before the benchmarks start. Its files go to a folder
# of their own (packed in the tarball, not copied up).
mkdir -p "$OUT/gpu_code"
if [ "$DRY_RUN" = 1 ]; then
  CODE_ARGS=(--arch 90)
else
  CODE_ARGS=(--arch 90 --verify-on-gpu)
fi
CODE_LIMIT=240
echo "== gpu-code (limit ${CODE_LIMIT}s, background): $PYTHON -m nf_kernels.benchmarking.gpu_code ${CODE_ARGS[*]}"
CODE_START=$SECONDS
timeout --kill-after=10 "$CODE_LIMIT" "$PYTHON" -m nf_kernels.benchmarking.gpu_code "${CODE_ARGS[@]}" \
  --markdown "$OUT/gpu_code/gpu_code.md" --summary "$OUT/gpu_code/summary.md" --json "$OUT/gpu_code/gpu_code.json" \
  > "$OUT/gpu_code/gpu_code.log" 2>&1 &
CODE_PID=$!

run_step tests-triton "$(left 260)" "$PYTHON" -m pytest tests/gpu -k triton -q -rs --junitxml="$OUT/tests-triton.xml"

wait "$BUILD_PID"
BUILD_CODE=$?
printf 'build\t%s\t%s\n' "$BUILD_CODE" "$((SECONDS - BUILD_START))" >> "$OUT/steps.tsv"
echo "   build exit code $BUILD_CODE after $((SECONDS - BUILD_START))s (log: $OUT/build.log)"
run_step backends 30 "$PYTHON" -c "import nf_kernels; print(nf_kernels.list_backends())"


run_step tests-cuda "$(left 200)" "$PYTHON" -m pytest tests/gpu -k cuda -q -rs --junitxml="$OUT/tests-cuda.xml"

wait "$CODE_PID"
CODE_CODE=$?
printf 'gpu-code\t%s\t%s\n' "$CODE_CODE" "$((SECONDS - CODE_START))" >> "$OUT/steps.tsv"
echo "   gpu-code exit code $CODE_CODE after $((SECONDS - CODE_START))s (log: $OUT/gpu_code/gpu_code.log)"

# 2. Benchmarks: ops (stopping new cases in time to leave room for the models), then models.
BENCH_LIMIT=$(left 15)
OPS_LIMIT=$((BENCH_LIMIT - 100))
[ "$OPS_LIMIT" -gt 10 ] || OPS_LIMIT=10
run_step benchmarks "$BENCH_LIMIT" "$PYTHON" benchmarks/run.py --device "$DEVICE" --preset gpu-suite --out "$OUT" \
  --ops-time-limit "$OPS_LIMIT" --no-progress

# 3. The short table, last.
echo
echo "== steps (exit 124: hit its time limit)"
column -t "$OUT/steps.tsv" 2>/dev/null || cat "$OUT/steps.tsv"
for name in tests-triton tests-cuda; do
  echo "$name: $(grep -E '(passed|failed|skipped|error)' "$OUT/$name.log" | tail -n 1)"
done
SUMMARY=$(ls -t "$OUT"/*-summary.md 2>/dev/null | head -n 1)
if [ -n "$SUMMARY" ]; then
  echo
  cat "$SUMMARY"
else
  echo "no benchmark summary: see $OUT/benchmarks.log"
fi
echo
if [ -s "$OUT/gpu_code/summary.md" ]; then
  echo "== compiled code of the kernels (full report: gpu_code/gpu_code.md in the tarball)"
  cat "$OUT/gpu_code/summary.md"
else
  echo "no compiled-code summary: see $OUT/gpu_code/gpu_code.log"
  tail -n 20 "$OUT/gpu_code/gpu_code.log" 2>/dev/null
fi
echo
if tar czf "$TOP/gpu_suite_all.tar.gz" -C "$TOP" all; then
  cp "$OUT/steps.tsv" "$TOP/"
  for f in "$OUT"/*.md "$OUT"/*.json "$OUT"/*.png; do
    if [ -e "$f" ]; then cp "$f" "$TOP/"; fi
  done
  rm -rf "$OUT"
fi
echo "suite finished in ${SECONDS}s; results in $TOP, every log in $TOP/gpu_suite_all.tar.gz"
