#!/usr/bin/env bash
# The results table of docs/results/motion/README.md: for each motion set (examples/make_motion_clips.py) and the
# camera-pan footage (examples/make_footage_clips.py), the documented command, the same with --model small, and the
# same network in a plain PyTorch loop (benchmarks/torch_video_compare.py, in an environment with torch==2.13.0).
#   bash docs/results/motion/run_table.sh SETS_DIR FOOTAGE_DIR OUT_DIR [TORCH_PYTHON]
set -uo pipefail
sets=$1; footage=$2; out=$3; torch_python=${4:-}
mkdir -p "$out"
python=${PYTHON:-.venv/bin/python}
for kind in direction speed rotation background uneven footage; do
    data="$sets/$kind"; [ "$kind" = footage ] && data=$footage
    for model in bn small; do
        start=$(date +%s)
        $python examples/video_conv.py --video-dir "$data" --size 48 --val-split 0.2 --model $model \
            --savepath "$out/runs/$kind-$model" --force > "$out/$kind-$model.log" 2>&1
        echo "$kind $model tinyflux $(grep -oE '= [0-9.]+$' "$out/$kind-$model.log" | tail -n 1) $(( $(date +%s) - start )) s"
    done
    if [ -n "$torch_python" ]; then
        start=$(date +%s)
        $torch_python benchmarks/torch_video_compare.py --video-dir "$data" --size 48 > "$out/$kind-torch.log" 2>&1
        echo "$kind bn torch $(grep -oE 'test accuracy [0-9.]+' "$out/$kind-torch.log") $(( $(date +%s) - start )) s"
    fi
done
