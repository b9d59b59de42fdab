#!/usr/bin/env bash
# Makes ready, on this machine, what benchmarks/gpu_suite.sh needs on a lent GPU machine, which can reach no package
# registry and gets no ../shared/data:
#   .whl/  the benchmark-only packages its image lacks (kornia, albumentations, lightly and their needs) and timm,
#          as Python 3.12 wheels at the versions installed here, so GPU and CPU results compare the same versions;
#   .gpu/data/cifar10/cifar10.npz  the first 8,192 CIFAR-10 training images (what the benchmarks read);
#   .gpu/git_sha  the commit (the copy that travels has no .git), "+dirty" when the code has uncommitted changes.
# Both folders are git-ignored. Then one device call (about 40 MB travels):
#   run  command="bash benchmarks/gpu_suite.sh"  carry=[".whl", ".gpu"]  timeout_s=590
# and `python benchmarks/gpu_collect.py DIR` on the files that come back.
#
#   bash benchmarks/gpu_prepare.sh [DATA_DIR]   # DATA_DIR: the datasets folder [default: $VISSL_LITE_DATA or ../shared/data]
set -euo pipefail
data=$(realpath -m "${1:-${VISSL_LITE_DATA:-$(dirname "$0")/../../shared/data}}")  # before the cd: as the user wrote it
cd "$(dirname "$0")/.."
cifar=$data/cifar10/cifar10.npz
[ -f "$cifar" ] || { echo "gpu_prepare: $cifar not found; pass the datasets folder as DATA_DIR" >&2; exit 1; }

# the installed versions of what the GPU image lacks, and timm at the version the CPU results used (its own torch,
# torchvision, numpy and opencv stay)
pins=$(python3 - <<'PY'
import importlib.metadata as md
names = ["timm", "kornia", "kornia_rs", "lightly", "albumentations", "albucore", "simsimd", "stringzilla", "pydantic",
         "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions"]
missing = []
for n in names:
    try:
        print(f"{n}=={md.version(n)}")
    except md.PackageNotFoundError:
        missing.append(n)
if missing:
    raise SystemExit(f"gpu_prepare: not installed here: {', '.join(missing)}; run pip install -e '.[bench]' first")
PY
)
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086  # one argument per pin
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins

rm -rf .gpu && mkdir -p .gpu/data/cifar10
python3 - "$cifar" <<'PY'
import sys
import numpy as np
with np.load(sys.argv[1]) as f:
    np.savez_compressed(".gpu/data/cifar10/cifar10.npz", train_images=f["train_images"][:8192],
                        train_labels=f["train_labels"][:8192])
PY
# the benchmarks' own rule for the commit and its "+dirty" mark
sha=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from _common import git_sha; print(git_sha() or '')")
echo "$sha" > .gpu/git_sha
echo "gpu_prepare: $(ls .whl | wc -l) wheels; .whl and .gpu hold $(du -shc .whl .gpu | tail -1 | cut -f1); commit $sha"
