#!/usr/bin/env bash
# Every GPU measurement of issue 6 in one device call of about 9 minutes, most important first, each step under its
# own time limit so that one slow step costs only itself. Prepare with benchmarks/gpu_prepare.sh, then
#   run  command="bash benchmarks/gpu_suite.sh"  carry=[".whl", ".gpu"]  timeout_s=590
# What comes back in $OUT, rewritten after every step (a step cut off by the call's limit loses only itself):
# suite.log (every step's output and exit status), results.tar.gz (the *_cuda*.json results) and summary_cuda.json
# (the GPU headlines alone). `python benchmarks/gpu_collect.py DIR` (DIR: where those files came back) puts them into
# benchmarks/results/, merging the headlines into summary.json; then commit.
#   1. the product on the GPU: `vissl-lite pretrain` on the built-in data, 3 epochs (CUDA, bf16, uint8 on device);
#   2. augmentation throughput, ours vs torchvision v2 and albumentations DataLoaders (target: ours >= 200,000 img/s
#      at 32 px);
#   3. SimCLR ResNet-18 small-input end to end vs lightly, batch 128 (the CPU job) in fp32 and bf16, then batch 512
#      in bf16 (target: ours >= 20,000 img/s);
#   4. MAE and DAE end to end vs lightly's transforms, bf16;
#   5. the medical presets' throughput; 6. the model-side layout comparison (bf16).
# QUICK=1 shrinks every step (batch 32, 512 images, 2 timed steps) and gives it 8x the time, to check this script
# on a CPU machine (numbers meaningless; results go to $OUT/quick_results, not benchmarks/results, and are packed as
# the GPU's would be).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/vissl_lite_gpu}
mkdir -p "$out"
log=$out/suite.log
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "gpu_suite: installing the carried wheels failed" | tee -a "$log"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -f .gpu/git_sha ] && export VISSL_LITE_GIT_SHA=$(cat .gpu/git_sha)
[ -d .gpu/data ] && export VISSL_LITE_DATA=$PWD/.gpu/data
workers=$(( $(nproc) / 2 ))  # lightly's DataLoader workers: half the cores, the main process keeps the rest
if [ "${QUICK:-0}" = 1 ]; then
    repeats=1 scale=(--steps 2 --warmup 1 --repeats 1 --images 512 --batch-size 32) big=64 epochs=1 slow=8
    workers=2 kind=cpu
    export VISSL_LITE_RESULTS=$out/quick_results  # a check leaves the committed results alone
else
    repeats=3 scale=(--steps 40 --warmup 10 --repeats 3) big=512 epochs=3 slow=1 kind=cuda
fi

results=${VISSL_LITE_RESULTS:-$PWD/benchmarks/results}
pack() {  # this device's results so far, and its summary.json headlines alone (keys ending in _$kind; all in QUICK)
    (cd "$results" 2>/dev/null && compgen -G "*_${kind}*.json" > /dev/null &&
        tar czf "$out/results.tar.gz" -- *_"${kind}"*.json)
    python3 - "$results/summary.json" "$out/summary_cuda.json" "$kind" "${QUICK:-0}" <<'PY'
import json, pathlib, sys
src, dst, kind, quick = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
held = json.loads(src.read_text()) if src.is_file() else {}
dst.write_text(json.dumps({k: v for k, v in held.items() if quick or k.endswith("_" + kind)}, indent=2) + "\n")
PY
}
step() {  # step LIMIT_S COMMAND...: run under a time limit (longer on a CPU), log everything, never stop the suite
    local limit=$(( $1 * slow ))
    shift
    echo "== $* (limit ${limit} s)" | tee -a "$log"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
    echo "== exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$log"
    pack
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, torchvision, timm, kornia, lightly, albumentations as A
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'torchvision', torchvision.__version__, 'timm',
      timm.__version__, 'kornia', kornia.__version__, 'lightly', lightly.__version__, 'albumentations', A.__version__)"
  echo "commit ${VISSL_LITE_GIT_SHA:-unknown}, data ${VISSL_LITE_DATA:-none}, lightly workers $workers"
} 2>&1 | tee -a "$log"

rm -rf /tmp/vissl_lite_smoke
step 40 python3 -m vissl_lite.cli pretrain --epochs "$epochs" --no-progress --out /tmp/vissl_lite_smoke
step 70 python3 benchmarks/augment_throughput.py --repeats "$repeats" --workers "$workers"
step 140 python3 benchmarks/pretrain_throughput.py --jobs simclr --precision fp32,bf16 "${scale[@]}" --workers "$workers"
step 70 python3 benchmarks/pretrain_throughput.py --jobs simclr --precision bf16 "${scale[@]}" --batch-size "$big" \
    --workers "$workers"
step 90 python3 benchmarks/pretrain_throughput.py --jobs mae,dae --precision bf16 "${scale[@]}" --workers "$workers"
step 25 python3 benchmarks/medical_presets_throughput.py --repeats "$repeats"
step 45 python3 benchmarks/model_layout.py --precision bf16 "${scale[@]:0:6}"

echo "gpu_suite: done; $out holds suite.log, results.tar.gz and summary_cuda.json" | tee -a "$log"
