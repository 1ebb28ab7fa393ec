#!/usr/bin/env bash
# The GPU check as one prepared command, for the lent machine (an NVIDIA GPU with cupy, CUDA torch and JAX's
# CUDA plugin, no internet) within 10 minutes:
#   1. array-api-compat and array-api-strict from the wheels carried in benchmarks/wheels (into a temporary folder),
#   2. pytest -m gpu -rs: the gpu-marked tests on cupy, torch CUDA and jax GPU; a skipped test counts as a failure,
#   3. benchmarks/gpu_checks.py: no host sync in the batch loop (torch sync debug mode "error",
#      cupyx.allow_synchronize(False), jax.transfer_guard_device_to_host("disallow")), Philox bits equal to numpy's, 5 float32
#      epochs within 0.005 test accuracy of numpy, 1 float64 epoch within 1e-10, a mid-epoch stop and resume,
#      and `info`, `--device cuda:1` and CUDA_VISIBLE_DEVICES="" each ending in one line,
#   4. benchmarks/gpu_bench.py: 300-epoch trainings timed (cupy, torch CUDA, jax, the PyTorch peer, --book), and
#      the mask, the step and the evaluation timed apart; its JSON goes to --out.
# Every stage runs (each under its own time limit); the exit status is 1 if any failed.
#
# usage: benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--epochs N] [--reps N]
#   --dry-run  the whole script on this machine's CPU with stand-ins (array-api-strict's "device1" for cupy, torch
#              and jax on the CPU), tiny sizes, pytest only collecting the gpu tests; a test runs it.
#   --out      where the results go (default: $OUT if set, else benchmarks/results).
#
# Preparing the checkout, where there is internet (git ignores the folder; the device tool's `carry` takes it):
#   pip download array-api-compat array-api-strict -d benchmarks/wheels --no-deps
# The data (the book's subset embedded in the package) and the book's output (tests/data) are in the repository.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-benchmarks/results}"
dry_run=0
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out="$2"; shift ;;
    --epochs|--reps) bench_args+=("$1" "$2"); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

python="${PYTHON:-python3}"
wheels="benchmarks/wheels"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's portable_cnn and benchmarks
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX would take 75% of the GPU's memory, leaving cupy and torch little
export PIP_DISABLE_PIP_VERSION_CHECK=1
mode=()
[ "$dry_run" = 1 ] && mode=(--dry-run)
started=$SECONDS
failed=()

say() { echo "gpu_check: $*"; }

stage() {  # stage NAME SECONDS COMMAND...: run it under a time limit (none in a dry run), log it, note a failure
  local name="$1" limit="$2"
  [ "$dry_run" = 1 ] && limit=3600  # a shared CPU may be slow: the dry run proves the steps, not the time
  shift 2
  say "== $name (at most ${limit} s) =="
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/gpu-check-$name.log"
  local status=${PIPESTATUS[0]}
  [ "$status" = 124 ] && say "$name ran past ${limit} s"
  if [ "$status" != 0 ]; then failed+=("$name"); fi
  say "$name: exit $status after $(( SECONDS - started )) s in all"
}

# 1. The pure-Python dependencies: the carried wheels first, else what is installed.
if ls "$wheels"/*.whl >/dev/null 2>&1; then
  "$python" -m pip install -q --no-index --no-deps --target "$work/site" "$wheels"/*.whl || { say "cannot install $wheels/*.whl"; exit 1; }
  export PYTHONPATH="$work/site:$PYTHONPATH"
  say "installed from $wheels: $(cd "$wheels" && ls -- *.whl | tr '\n' ' ')"
fi
for pair in array_api_compat:array-api-compat array_api_strict:array-api-strict threadpoolctl:threadpoolctl pytest:pytest; do
  module="${pair%%:*}"
  if ! version=$("$python" -c "import $module; print($module.__version__)" 2>/dev/null); then
    say "python module '$module' is missing; where there is internet: pip download ${pair#*:} -d $wheels --no-deps"
    exit 1
  fi
  say "$module $version"
done
[ "$dry_run" = 1 ] || nvidia-smi -L || say "nvidia-smi finds no GPU (the stages below will say what fails)"

# 2. The gpu-marked tests; benchmarks.no_skips turns any skip into a failure. The dry run only collects them.
if [ "$dry_run" = 1 ]; then
  stage pytest 120 "$python" -m pytest -m gpu -rs -q -p no:cacheprovider -p benchmarks.no_skips --collect-only
else
  stage pytest 240 "$python" -m pytest -m gpu -rs -q -p no:cacheprovider -p benchmarks.no_skips
fi

# 3. The checks, then 4. the timings.
stage checks 150 "$python" benchmarks/gpu_checks.py "${mode[@]}"
stage timings 180 "$python" benchmarks/gpu_bench.py "${mode[@]}" --out "$out" "${bench_args[@]}"

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]} (logs in $out) after $(( SECONDS - started )) s"
  exit 1
fi
say "all stages passed in $(( SECONDS - started )) s (logs in $out)"
