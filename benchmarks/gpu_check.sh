#!/usr/bin/env bash
# The GPU check in one command, for the lent machine (an NVIDIA GPU; python3 with numpy, cupy, CUDA torch, JAX's CUDA
# plugin and pytest; no internet). Three stages, each under its own cap; each writes its log and JSON to the output
# folder as it ends (setup.log, pytest.log, pytest.json, timings.log, timings.json, summary.json); then a table of the
# stages. Exit status 1 if any stage failed.
#   setup    benchmarks/gpu_setup.py: the carried wheels unpacked, versions and devices listed
#   pytest   the gpu-marked tests on cupy, torch CUDA and jax (tests/test_gpu.py's proofs among them); a skip fails
#   timings  benchmarks/gpu_bench.py: 300-epoch trainings, their phases, the array operations an epoch dispatches
#
# usage: benchmarks/gpu_check.sh [--prepare | --dry-run] [--out DIR]
#   --prepare  where there is internet: the wheels the image lacks into benchmarks/wheels (git-ignored)
#   --dry-run  on this CPU, with only what the image surely has (benchmarks/image_only hides the rest) plus the wheels:
#              the gpu-marked tests on stand-ins, small sizes, no caps (tests/test_gpu_check.py runs it)
#   --out      where the results go (default: $OUT if set, else benchmarks/results/gpu-check)
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
say() { echo "gpu_check: $*"; }

if [ "$mode" = prepare ]; then
  # What the image lacks, and threadpoolctl (cheap to carry), as pure-Python wheels at the versions installed here.
  pinned=()
  for name in array-api-compat array-api-strict threadpoolctl; do
    version=$("$python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)
    pinned+=("$name${version:+==$version}")
  done
  mkdir -p "$wheels"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --dest "$wheels" "${pinned[@]}" || { say "pip download failed"; exit 1; }
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

# stage NAME CAP COMMAND...: TERM after CAP s, KILL KILL_AFTER s later (all stages: 460 s), output to NAME.log as it
# comes, summary.json rewritten.
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
