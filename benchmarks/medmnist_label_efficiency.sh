#!/usr/bin/env bash
# Issue-4 evaluation table: SimCLR pretraining on a MedMNIST set, then linear probe, kNN and fine-tuning at 1%,
# 10% and 100% of the labels over 3 seeds, each against a random-init / from-scratch baseline. Every step is a
# plain CLI command; each writes metrics.json and report.md in its folder.
#   bash benchmarks/medmnist_label_efficiency.sh DATA_DIR [OUT_DIR]
# DATA_DIR holds pneumoniamnist/pneumoniamnist.npz and retinamnist/retinamnist.npz (MedMNIST v2, 28 px).
set -euo pipefail
data=${1:?usage: medmnist_label_efficiency.sh DATA_DIR [OUT_DIR]}
out=${2:-runs/label_efficiency}
regimes="0.01,0.1,1"
for set in pneumoniamnist:10 retinamnist:30; do
  name=${set%%:*}; epochs=${set##*:}
  run=$out/$name
  # metrics.json is written when pretraining finishes; a checkpoint without it is an interrupted run: resume it
  if [ -f "$run/checkpoint.pt" ] && [ ! -f "$run/metrics.json" ]; then
    vissl-lite pretrain --out "$run" --resume --no-progress
  elif [ ! -f "$run/metrics.json" ]; then
    vissl-lite pretrain --data "$data/$name/$name.npz" --image-size 28 --epochs "$epochs" --out "$run" --no-progress
  fi
  vissl-lite linear-probe --checkpoint "$run" --label-fraction $regimes --seeds 3 --no-progress
  vissl-lite knn --checkpoint "$run" --label-fraction $regimes --seeds 3 --no-progress
  vissl-lite finetune --checkpoint "$run" --label-fraction $regimes --seeds 3 --no-progress --resume
done
