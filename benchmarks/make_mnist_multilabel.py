"""Build the multi-label stand-in the README's "Multi-label data" table uses (ChestMNIST is not in the shared
data): MNIST digits, half the images overlaying a second digit of another class (pixelwise max), labels a
10-dim multi-hot vector, saved as a MedMNIST-style npz whose labels have shape (N, 10).

    python benchmarks/make_mnist_multilabel.py [--mnist ../shared/data/mnist] [--out mnist_multilabel.npz]
    vissl-lite pretrain --data mnist_multilabel.npz --image-size 28 --epochs 5 --out runs/multilabel
    vissl-lite finetune --checkpoint runs/multilabel --label-fraction 0.1,1

Splits: 6,000 train and 1,000 val images from MNIST's training digits (disjoint), 2,000 test images from its
test digits. Val comes from the same pool as train, so this is a demo of the multi-label path, not a benchmark.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import SHARED_DATA

from vissl_lite.data.arrays import read_idx


def overlay(images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images from the pool ``images`` (M, 28, 28), each a digit or, with probability 1/2, the pixelwise max
    of two digits of different classes; returns uint8 images (n, 28, 28) and multi-hot labels (n, 10)."""
    first = rng.choice(len(images), n, replace=False)
    out, hot = images[first].copy(), np.zeros((n, 10), dtype=np.uint8)
    hot[np.arange(n), labels[first]] = 1
    for i in np.flatnonzero(rng.random(n) < 0.5):
        while True:  # a second digit of another class
            j = rng.integers(len(images))
            if labels[j] != labels[first[i]]:
                break
        out[i] = np.maximum(out[i], images[j])
        hot[i, labels[j]] = 1
    return out, hot


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", default=str(SHARED_DATA / "mnist"), help="MNIST IDX folder (train-*, t10k-*)")
    p.add_argument("--out", default="mnist_multilabel.npz")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    mnist = read_idx(Path(args.mnist))
    if "test" not in mnist:
        raise SystemExit(f"{args.mnist} has no t10k-images-idx3-ubyte[.gz]; the test split is built from it")
    rng = np.random.default_rng(args.seed)
    (train_x, train_y), (test_x, test_y) = mnist["train"], mnist["test"]
    pool = rng.permutation(len(train_x))
    half = len(pool) // 2  # train and val draw from disjoint halves of MNIST's training digits
    splits = {"train": overlay(train_x[pool[:half]], train_y[pool[:half]], 6000, rng),
              "val": overlay(train_x[pool[half:]], train_y[pool[half:]], 1000, rng),
              "test": overlay(test_x, test_y, 2000, rng)}
    arrays = {}
    for name, (x, y) in splits.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = x, y
    np.savez_compressed(args.out, **arrays)
    counts = ", ".join(f"{k} {len(v[0])} ({(v[1].sum(1) == 2).mean():.0%} two digits)" for k, v in splits.items())
    print(f"wrote {args.out}: {counts}")


if __name__ == "__main__":
    main()
