"""Scaling: throughput against batch size, and memory against dataset size for the streaming path.

    python benchmarks/scaling.py [--repeats 3]

1. Throughput vs batch size at 32 px (CIFAR-10 images from ../shared/data, or the built-in shapes):
   - augmentation alone: the batched ``simclr`` views (2 per image), images per second;
   - SimCLR end to end with the quickstart model (ResNet-18, ImageNet stem, channels-last), images per second.
2. Peak memory vs dataset size: image folders of N PNG files (N from --sizes) written to a temporary folder, one
   epoch read in a fresh process with ``--data-mode stream`` (2 workers decode files; batches of 256) and, for
   contrast, with ``--data-mode memory`` (decoded once into one uint8 tensor). Memory is the proportional set size
   (PSS: shared pages split between the processes that map them) of the process and its DataLoader workers,
   summed and sampled every 20 ms from this process; the peak is reported next to the value right after
   ``import torch``.
   (``ru_maxrss`` would not do: a child started from this process inherits its parent's high-water mark.)
   Streaming should stay flat; memory mode grows by 3 x 32 x 32 bytes per image, by design.

Writes benchmarks/results/scaling_<device>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, environment, load_cifar, write_result
from PIL import Image
from pretrain_throughput import Pipeline

from vissl_lite import runs
from vissl_lite.augment import build_augment
from vissl_lite.config import make_config
from vissl_lite.train import build_optimizer

MEMORY_PROBE = r"""
import json, sys, time
import torch
from vissl_lite.data import load_split, make_loader

with open("/proc/self/smaps_rollup") as f:
    after_import = next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
folder, mode = sys.argv[1], sys.argv[2]
t0 = time.time()
data = load_split(folder, "train", 32, 3, data_mode=mode, progress=False)
loader = make_loader(data, 256, torch.device("cpu"), shuffle=True, drop_last=False, num_workers=2)
n = sum(x.shape[0] for x, _ in loader)
del loader  # stop the persistent workers here, not in interpreter teardown
print(json.dumps({"images": n, "after_import_mb": after_import, "seconds": time.time() - t0}), flush=True)
"""


def pss_mb(pid: int | str) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration):  # the process ended between listing and reading
        return 0.0


def tree_pss_mb(pid: int) -> float:
    """PSS of ``pid`` and its children (the DataLoader workers)."""
    kids = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids.update(path.read_text().split())
        except OSError:
            pass
    return pss_mb(pid) + sum(pss_mb(k) for k in kids)


def peak_memory(folder: Path, mode: str) -> dict:
    """Run the probe in a fresh process, sampling its tree's PSS from here every 20 ms (a sampling thread inside
    the probe could deadlock the workers it forks)."""
    proc = subprocess.Popen([sys.executable, "-c", MEMORY_PROBE, str(folder), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_pss_mb(proc.pid))
        time.sleep(0.02)
    if proc.returncode:
        raise RuntimeError(f"memory probe failed ({mode}, {folder}): exit {proc.returncode}")
    row = json.loads(proc.stdout.read().strip().splitlines()[-1])
    row["peak_mb"] = peak
    return row


def rate(fn, images: int, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(images / (time.perf_counter() - t))
    return statistics.mean(rates), statistics.stdev(rates) if len(rates) > 1 else 0.0


def augment_batches(aug, x: torch.Tensor, b: int) -> None:
    for i in range(0, len(x) - b + 1, b):
        aug(x[i:i + b])


def batch_scaling(images: torch.Tensor, device, repeats: int) -> dict:
    out = {"augment_simclr": {}, "simclr_end_to_end": {}}
    aug = build_augment("simclr", 32, 3).to(device)
    x_all = images.to(device)
    for b in (32, 64, 128, 256, 512, 1024):
        n = max(2048, b)
        mean, std = rate(partial(augment_batches, aug, x_all[:n], b), n - n % b, repeats)
        out["augment_simclr"][b] = {"images_per_s": mean, "std": std}
        print(f"  augment batch {b}: {mean:.0f} img/s", flush=True)
    cfg = make_config("simclr_quickstart", device=str(device))
    for b in (32, 64, 128, 256):
        torch.manual_seed(0)
        model = runs.to_channels_last(runs.build_model(cfg, 3).to(device))
        optimizer = build_optimizer(model, cfg)
        quick = build_augment(cfg.augment, 32, 3, **cfg.augment_args).to(device)
        steps = max(4, 512 // b)
        batches = ((x_all[(i * b) % (len(x_all) - b):][:b], None) for i in itertools.count())
        loop = Pipeline("vissl_lite", batches, quick, model, optimizer, device, None, runs.use_channels_last(model), b)
        mean, std = rate(partial(loop.steps, steps, False), steps * b, repeats)
        out["simclr_end_to_end"][b] = {"images_per_s": mean, "std": std}
        print(f"  SimCLR end to end batch {b}: {mean:.0f} img/s", flush=True)
    return out


def memory_scaling(images: torch.Tensor, sizes: list[int]) -> dict:
    out = {"stream": {}, "memory": {}}
    with tempfile.TemporaryDirectory() as tmp:
        written = 0
        folder = Path(tmp) / "images"
        (folder / "unlabeled").mkdir(parents=True)
        hwc = images.permute(0, 2, 3, 1).numpy()
        for n in sorted(sizes):
            for i in range(written, n):  # grow one folder: each size contains the smaller ones
                Image.fromarray(hwc[i % len(hwc)]).save(folder / "unlabeled" / f"{i:06d}.png")
            written = n
            for mode in ("stream", "memory"):
                row = peak_memory(folder, mode)
                out[mode][n] = row
                print(f"  {mode} {n} files: peak {row['peak_mb']:.0f} MB ({row['after_import_mb']:.0f} MB after "
                      "import torch)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default="1000,4000,16000", help="dataset sizes (files) for the memory test")
    p.add_argument("--skip-batch", action="store_true", help="memory part only (keeps the file's batch results)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    t0 = time.time()
    sizes = [int(s) for s in args.sizes.split(",")]
    images, _, source = load_cifar(max(max(sizes), 4096))
    previous = RESULTS / f"scaling_{device.type}.json"
    kept_from = None
    if args.skip_batch and previous.is_file():
        old = json.loads(previous.read_text())
        batch = old["throughput_vs_batch"]
        kept_from = old["environment"].get("git_sha")  # those numbers are that run's, not this one's
    else:
        print("throughput vs batch size", flush=True)
        batch = batch_scaling(images[:4096], device, args.repeats)
    print("peak memory vs dataset size", flush=True)
    memory = memory_scaling(images, sizes)
    stream = [memory["stream"][n]["peak_mb"] for n in sizes]
    out = {"benchmark": "scaling", "device": device.type, "environment": environment(device),
           "config": {"image_size": 32, "repeats": args.repeats, "memory_sizes": sizes, "stream_batch": 256,
                      "stream_workers": 2, "data": source,
                      "throughput_vs_batch_from": f"an earlier run at {kept_from} (--skip-batch)" if args.skip_batch
                      and kept_from is not None else "this run"},
           "throughput_vs_batch": batch, "memory_vs_dataset_size": memory,
           "stream_peak_growth_mb": max(stream) - min(stream), "wall_s": round(time.time() - t0, 1)}
    path = write_result(f"scaling_{device.type}.json", out)
    print(f"\nstreaming peak memory {min(stream):.0f}-{max(stream):.0f} MB over {sizes[0]}-{sizes[-1]} files; "
          f"written to {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
