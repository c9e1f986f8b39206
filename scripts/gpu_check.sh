#!/usr/bin/env bash
# The GPU work of issue 2 as one prepared run for a lent GPU machine (the `device` tool, about 15
# minutes of device time per session): one epoch of preresnet110 on CIFAR-10 (JPEG q75 copy) at full
# speed (bf16, channels_last, torch.compile) and, beside it, fp32 channels_last without compile.
#
#   bash scripts/gpu_check.sh prepare    # here: the data it needs into gpu-carry/ (git-ignored, ~50 MB)
#   device run: command "bash scripts/gpu_check.sh run", carry ["gpu-carry"], timeout_s 580
#   SMOKE=1 bash scripts/gpu_check.sh run   # here, on the CPU: the same steps on 512 images
#
# The device machine reaches no network; its python3 already has torch, tqdm, matplotlib, safetensors
# and scipy, so respaths runs from src/ without an install. Everything it writes lands flat in $OUT
# (the device tool brings back at most 8 files): gpu_check.log and one metrics CSV per run.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    mkdir -p gpu-carry
    cp ../shared/datasets/cifar10-jpeg-q75.tar.gz ../shared/datasets/make_cifar10.py gpu-carry/
    du -sh gpu-carry
    ;;
run)
    out="${OUT:-gpu-out}"
    mkdir -p "$out"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    py="${PYTHON:-python3}"
    exec > >(tee "$out/gpu_check.log") 2>&1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    data="$PWD/gpu-carry/data"
    [ -d "$data/cifar-10-batches-py" ] || "$py" gpu-carry/make_cifar10.py "$data"
    if [ -n "${SMOKE:-}" ]; then
        common=(--device cpu --limit-train 512 --limit-test 256)
        fullspeed=(--precision fp32)
    else
        common=(--device cuda)
        fullspeed=(--precision bf16 --compile)
    fi
    # two epochs each: the first pays for compilation and warm-up, the second is the speed
    for run in fullspeed fp32; do
        if [ "$run" = fullspeed ]; then opts=("${fullspeed[@]}"); else opts=(--precision fp32); fi
        start=$(date +%s)
        "$py" -m respaths.cli train --model preresnet110 --dataset cifar10 --data-dir "$data" --epochs 2 \
            --channels-last --no-progress --force --out "gpu-runs/$run" "${common[@]}" "${opts[@]}"
        echo "$run: $(( $(date +%s) - start )) s for 2 epochs with set-up"
        cp "gpu-runs/$run/metrics.csv" "$out/metrics-$run.csv"
        cat "gpu-runs/$run/metrics.csv"
        "$py" -c 'import csv, sys
r = list(csv.DictReader(open(sys.argv[1])))[-1]
ips, sec = float(r["images_per_s"]), float(r["seconds"])
print(f"{sys.argv[2]}: epoch 2 at {ips:,.0f} img/s; the 164-epoch recipe at this pace: {164 * sec / 60:.1f} min "
      "(training loops only, no evaluation or start-up, on this GPU; goal: under 10 on one H100)")' "gpu-runs/$run/metrics.csv" "$run"
    done
    ;;
*)
    echo "usage: bash scripts/gpu_check.sh prepare|run (see the comments at the top)" >&2
    exit 2
    ;;
esac
