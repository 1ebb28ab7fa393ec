#!/usr/bin/env bash
# The GPU check as one prepared command, for the lent machine (an NVIDIA GPU, python3 with numpy, cupy, CUDA torch,
# JAX's CUDA plugin and pytest, no internet): three stages, each under its own cap, in at most 8 minutes in all:
#   setup    the carried wheels (benchmarks/wheels) unpacked, versions and devices listed (benchmarks/gpu_setup.py),
#   pytest   the gpu-marked tests on cupy, torch CUDA and jax GPU (tests/test_gpu.py: no host sync in the batch loop,
#            Philox, float32 and float64 against numpy, stop and resume, predict, the command line's refusals, and
#            the gpu-marked tests of the other files); a skipped test counts as a failure,
#   timings  benchmarks/gpu_bench.py: 300-epoch trainings timed (cupy, torch CUDA, jax, the PyTorch peer, --book),
#            the phases apart, and the array operations each dispatches per batch and per epoch.
# Each stage's log and JSON land in the output folder as the stage ends (6 files in all, flat: setup.log,
# pytest.log, pytest.json, timings.log, timings.json, summary.json); the script prints each
# stage's duration and a summary table. The exit status is 1 if any stage failed.
#
# usage: benchmarks/gpu_check.sh [--prepare | --dry-run] [--out DIR]
#   --prepare  where there is internet: download the wheels the GPU image lacks (CPython 3.12, manylinux) into
#              benchmarks/wheels (git ignores it) and print the device tool's `carry` list and the command.
#   --dry-run  the whole check on this machine's CPU: only what the GPU image surely has (numpy, torch, jax, pytest:
#              benchmarks/image_only hides every other installed package) plus the prepared wheels; the gpu-marked
#              tests run on stand-ins (array-api-strict's "device1" for cupy, torch and jax on the CPU)
#              at small sizes, without the caps (a shared CPU is slow). tests/test_gpu_check.py runs it.
#   --out      where the results go (default: $OUT if set, else benchmarks/results/gpu-check).
# The data (the book's subset embedded in the package) and the book's output (tests/data) are in the repository.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-benchmarks/results/gpu-check}"
mode=check
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) mode=prepare ;;
    --dry-run) mode=dry-run ;;
    --out) out="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

python="${PYTHON:-python3}"
wheels="benchmarks/wheels"
# What the image lacks (array-api-compat, array-api-strict), and threadpoolctl, which it has but which costs nothing
# to carry: each at the version this checkout is tested with (where that is installed here), as pure-Python wheels.
carried=(array-api-compat array-api-strict threadpoolctl)
say() { echo "gpu_check: $*"; }

if [ "$mode" = prepare ]; then
  mkdir -p "$wheels"
  pinned=$("$python" - "${carried[@]}" <<'EOF'
import importlib.metadata, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
        print(name)
EOF
  ) || exit 1
  # shellcheck disable=SC2086  # one requirement a word
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --dest "$wheels" $pinned || { say "pip download failed"; exit 1; }
  say "prepared in $wheels: $(cd "$wheels" && ls -- *.whl | tr '\n' ' ')"
  say 'carry: ["benchmarks/wheels"]'
  say 'command: bash benchmarks/gpu_check.sh   (timeout_s 540; results in $OUT: 6 files)'
  exit 0
fi

if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
  say "no wheels in $wheels: run benchmarks/gpu_check.sh --prepare where there is internet, then carry $wheels"
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$work/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the unpacked wheels, the checkout
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1  # the image's pytest plugins (xdist, timeout, benchmark ...) stay out
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX would take 75% of the GPU's memory, leaving cupy and torch little
dry=()
if [ "$mode" = dry-run ]; then
  dry=(--dry-run)
  export PYTHONPATH="$PWD/benchmarks/image_only:$PYTHONPATH"  # hide what the image may lack
  export PORTABLE_CNN_GPU_STAND_INS=1  # the gpu-marked tests on CPU stand-ins
  export OMP_NUM_THREADS=1  # torch's and BLAS's threads would spin against each other on a shared CPU
fi

# stage NAME CAP COMMAND...: at most CAP seconds, then TERM, and KILL KILL_AFTER seconds later (caps with their
# kill-after sum to 460 s); its output goes to NAME.log as it comes; summary.json is rewritten after each stage.
KILL_AFTER=5
names=() statuses=() durations=() caps=()
started=$SECONDS
stage() {
  local name="$1" cap="$2" begun=$SECONDS
  shift 2
  [ "$mode" = dry-run ] && cap=1800  # a shared CPU may be slow: the dry run proves the steps, not the time
  say "== $name (at most $cap s + $KILL_AFTER s) =="
  timeout --kill-after="$KILL_AFTER" "$cap" "$@" 2>&1 | tee "$out/$name.log"
  local status=${PIPESTATUS[0]}
  [ "$status" = 124 ] || [ "$status" = 137 ] && say "$name ran past its cap of $cap s"
  names+=("$name") statuses+=("$status") durations+=($(( SECONDS - begun ))) caps+=("$cap")
  say "$name: exit $status after $(( SECONDS - begun )) s ($(( SECONDS - started )) s in all)"
  {
    printf '{"mode": "%s", "seconds": %d, "stages": [' "$mode" $(( SECONDS - started ))
    local index
    for index in "${!names[@]}"; do
      [ "$index" -gt 0 ] && printf ', '
      printf '{"stage": "%s", "exit": %d, "seconds": %d, "cap": %d}' \
        "${names[$index]}" "${statuses[$index]}" "${durations[$index]}" "${caps[$index]}"
    done
    printf ']}\n'
  } > "$out/summary.json"
}

stage setup 45 "$python" benchmarks/gpu_setup.py "$wheels" "$work/site" "${dry[@]}"
if [ "${statuses[0]}" != 0 ]; then
  say "setup failed: the later stages need its modules (see $out/setup.log)"
  exit 1
fi
stage pytest 250 "$python" -m pytest -m gpu -rs -q -p no:cacheprovider -p benchmarks.gpu_pytest \
  --outcomes-json "$out/pytest.json"
stage timings 150 "$python" benchmarks/gpu_bench.py "${dry[@]}" --budget 120 --json "$out/timings.json"

failed=0
echo
echo "| stage | exit | seconds | cap |"
echo "| --- | ---: | ---: | ---: |"
for index in "${!names[@]}"; do
  echo "| ${names[$index]} | ${statuses[$index]} | ${durations[$index]} | ${caps[$index]} |"
  [ "${statuses[$index]}" = 0 ] || failed=1
done
echo
if [ "$failed" = 1 ]; then
  say "FAILED after $(( SECONDS - started )) s (logs and JSON in $out)"
  exit 1
fi
say "all stages passed in $(( SECONDS - started )) s (logs and JSON in $out)"
