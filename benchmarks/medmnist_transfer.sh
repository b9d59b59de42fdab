#!/usr/bin/env bash
# Issue-5 transfer table: one `vissl-lite transfer` per MedMNIST set (SSL pretraining with the modality's
# augmentation preset, then linear probe, kNN and fine-tuning at 1%, 10% and 100% of the labels over 3 seeds,
# each against random init), then the summary JSON that the README table comes from.
#   bash benchmarks/medmnist_transfer.sh DATA_DIR [OUT_DIR]
# DATA_DIR holds pneumoniamnist/pneumoniamnist.npz and retinamnist/retinamnist.npz (MedMNIST v2, 28 px).
set -euo pipefail
data=${1:?usage: medmnist_transfer.sh DATA_DIR [OUT_DIR]}
out=${2:-runs/transfer}
# set:preset:epochs. PneumoniaMNIST is chest X-ray (grayscale): radiology. RetinaMNIST is fundus (RGB): fundus.
for spec in pneumoniamnist:radiology:10 retinamnist:fundus:30; do
  IFS=: read -r name preset epochs <<< "$spec"
  start=$(date +%s)
  vissl-lite transfer --data "$data/$name/$name.npz" --image-size 28 --augment "$preset" --epochs "$epochs" \
    --out "$out/$name" --no-progress --resume
  echo "$name: $(( $(date +%s) - start )) s"
done
python "$(dirname "$0")/summarise_transfer.py" "$out" pneumoniamnist retinamnist
