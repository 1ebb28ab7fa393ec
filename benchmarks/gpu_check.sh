#!/usr/bin/env bash
# The GPU check in one call, for a machine with an NVIDIA GPU, CuPy and CUDA PyTorch:
#   1. makes the package importable (array-api-compat from benchmarks/wheels if missing),
#   2. runs the gpu-marked tests (pytest -m gpu: cupy and torch CUDA),
#   3. times 300 epochs of the default recipe and of --book on cupy against PyTorch CUDA
#      (benchmarks/gpu_bench.py), writing its JSON to --out.
#
# usage: benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--data-dir DIR] [--epochs N] [--reps N]
#   --dry-run   check the GPU, the dependencies and the data, and say what would run; run nothing.
#               On a machine without a GPU it says so and exits 0.
#   --data-dir  the MNIST IDX folder (default: $PORTABLE_CNN_DATA_DIR, else ../shared/data/mnist, else the
#               book's subset embedded in the package, which is all the check needs).
#
# Preparing an offline GPU machine (which lacks array-api-compat), on a machine with internet:
#   pip download array-api-compat threadpoolctl -d benchmarks/wheels      (add pytest if it lacks that too)
# then copy the checkout with benchmarks/wheels/ (git ignores it: never commit wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

out="benchmarks/results"
dry_run=0
bench_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out="$2"; shift ;;
    --data-dir) export PORTABLE_CNN_DATA_DIR="$(cd "$2" && pwd)"; shift ;;
    --epochs|--reps) bench_args+=("$1" "$2"); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

python="${PYTHON:-python3}"
wheels="benchmarks/wheels"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's portable_cnn, installed or not
if [ -z "${PORTABLE_CNN_DATA_DIR:-}" ] && [ -d ../shared/data/mnist ]; then
  export PORTABLE_CNN_DATA_DIR="$(cd ../shared/data/mnist && pwd)"
fi

say() { echo "gpu_check: $*"; }

# 1. Is there a GPU at all? And the data?
if ! command -v nvidia-smi >/dev/null 2>&1 || ! gpus="$(nvidia-smi -L 2>/dev/null)" || [ -z "$gpus" ]; then
  say "no NVIDIA GPU on this machine (nvidia-smi finds none); nothing to run"
  [ "$dry_run" = 1 ] && exit 0 || exit 1
fi
say "found: $gpus"
say "data: ${PORTABLE_CNN_DATA_DIR:-the embedded book subset}"

# 2. Python modules: the GPU libraries must be there; pure-Python dependencies may come from $wheels.
missing_installable=()
for module in cupy torch; do
  "$python" -c "import $module" 2>/dev/null || { say "python module '$module' is missing; install it for this CUDA"; exit 1; }
done
for pair in array_api_compat:array-api-compat threadpoolctl:threadpoolctl pytest:pytest; do
  module="${pair%%:*}"; package="${pair#*:}"
  "$python" -c "import $module" 2>/dev/null || missing_installable+=("$package")
done
if [ ${#missing_installable[@]} -gt 0 ]; then
  prepare="pip download ${missing_installable[*]} -d $wheels   (where there is internet; copy $wheels here)"
  if [ "$dry_run" = 1 ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
    say "missing ${missing_installable[*]}: would install them from $wheels"
  elif [ "$dry_run" = 1 ]; then
    say "missing ${missing_installable[*]} and $wheels has no wheels; prepare them with: $prepare"
  elif ! "$python" -m pip install --no-index --find-links "$wheels" "${missing_installable[@]}"; then
    say "missing ${missing_installable[*]}, and $wheels cannot provide them; prepare them with:"
    say "  $prepare"
    exit 1
  fi
fi

if [ "$dry_run" = 1 ]; then
  say "would run: $python -m pytest -m gpu -q, then benchmarks/gpu_bench.py ${bench_args[*]:-} --out $out"
  exec "$python" benchmarks/gpu_bench.py --dry-run "${bench_args[@]}"
fi

# 3. The gpu-marked tests, then the timings (run even if a test failed: the JSON records it).
mkdir -p "$out"
set +e
"$python" -m pytest -m gpu -q -p no:cacheprovider
tests=$?
set -e
"$python" benchmarks/gpu_bench.py --out "$out" --tests-exit-code "$tests" "${bench_args[@]}"
[ "$tests" = 0 ] || { say "the gpu-marked tests failed (pytest exit $tests)"; exit 1; }
