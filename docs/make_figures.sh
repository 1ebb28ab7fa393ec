#!/usr/bin/env bash
# Regenerates the pictures in docs/ with the package itself, from one real training run: the default
# recipe, 300 epochs on the first 1000 MNIST training images, evaluated every 10 epochs (a few
# minutes on two CPU cores). Needs the extras: pip install '.[plot,images,test]' (the page's screenshot: Playwright
# and Debian's Chromium).
#
# Usage: docs/make_figures.sh [DATA_DIR]   (default: $PORTABLE_CNN_DATA_DIR, then the usual search)
# The checkpoint and metrics of the run are kept in $WORK_DIR (default: a new temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
data=()
if [[ $# -gt 0 ]]; then data=(--data-dir "$(cd "$1" && pwd)"); fi
work="${WORK_DIR:-$(mktemp -d)}"
mkdir -p "$work"
cnn=(python -m portable_cnn)

"${cnn[@]}" train --epochs 300 --test-every 10 --save "$work/model.npz" --metrics "$work/metrics.csv" ${data[@]+"${data[@]}"}
"${cnn[@]}" plot kernels --checkpoint "$work/model.npz" -o docs/kernels.png
"${cnn[@]}" plot maps --checkpoint "$work/model.npz" --index 0 -o docs/feature_maps.png ${data[@]+"${data[@]}"}
"${cnn[@]}" plot curves --metrics "$work/metrics.csv" -o docs/curves.png
python docs/make_screenshot.py "$work/model.npz" docs/page.png
(cd "$work" && "${cnn[@]}" evaluate --checkpoint model.npz --plot "$root/docs/confusion.png" ${data[@]+"${data[@]}"}) | tee docs/evaluation.txt
echo "pictures in docs/; the run's checkpoint and metrics in $work"
