"""Throughput of the medical augmentation presets (radiology, pathology, fundus) on the device, at 224 px (64
uint8 images of 256 px, cropped to 224) and at 28 px (512 MedMNIST-sized images), two views per image, best of
``--repeats`` after a warm-up pass.

    python benchmarks/medical_presets_throughput.py [--repeats 3] [--rounds 2]

There is no per-sample baseline for these recipes (torchvision has no stain jitter or window jitter), so this
script is for before/after comparisons of our own code: run it in two checkouts, alternating, with ``--rounds``
repeating the whole sweep to show the spread on a shared machine. Inputs are random uint8 images: throughput does
not depend on content. Writes benchmarks/results/medical_presets_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import environment, write_result

from vissl_lite.augment import build_augment

CASES = {224: (64, 256), 28: (512, 28)}  # output size: (images, source side)
PRESETS = {"radiology": 1, "pathology": 3, "fundus": 3}  # preset: channels


def images_per_s(name: str, channels: int, size: int, repeats: int, device: torch.device) -> float:
    n, side = CASES[size]
    x = torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, device=device)
    aug = build_augment(name, size=size, channels=channels, n_views=2).to(device)
    aug(x[:8])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        aug(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    start = time.time()
    rounds = []
    for r in range(args.rounds):
        row = {}
        for size in CASES:
            for name, channels in PRESETS.items():
                row[f"{name}_{size}px"] = round(images_per_s(name, channels, size, args.repeats, device), 1)
        rounds.append(row)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in row.items()), flush=True)
    result = {"benchmark": "medical_presets_throughput", "device": device.type, "environment": environment(device),
              "config": {"cases": {f"{s}px": {"images": n, "source_side": side} for s, (n, side) in CASES.items()},
                         "views_per_image": 2, "repeats": args.repeats, "statistic": "best of repeats",
                         "unit": "images/s"},
              "rounds": rounds, "wall_s": round(time.time() - start, 1)}
    path = write_result(f"medical_presets_throughput_{device.type}.json", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
