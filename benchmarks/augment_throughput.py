"""Augmentation throughput: vissl_lite's batched SimCLR and crop_flip views on the device against the same operations
applied per sample in a DataLoader with torchvision transforms v2 and with albumentations.

    python benchmarks/augment_throughput.py [--data ../shared/data/cifar10/cifar10.npz] [--repeats 3]

Every pipeline makes two views per image. SimCLR recipe: random resized crop (8-100%), horizontal flip, colour
jitter (0.8, 0.8, 0.8, 0.2) with p=0.8, grayscale p=0.2, Gaussian blur (kernel ~10% of the side, sigma 0.1-2) with
p=0.5, normalisation. crop_flip recipe (MAE's): random resized crop (20-100%), horizontal flip, normalisation.
Inputs are uint8 images already decoded in memory (CIFAR-10 at 32 px; the same images upsampled once to 256 px
for the 224 px case), so the numbers compare augmentation alone. Throughput is images per second (each image gives
two views), mean and std over repeats after one warm-up pass. The ratio of ours to the torchvision DataLoader is
measured in the same process. Writes benchmarks/results/augment_throughput_<device>.json (a run of some
--recipes only: augment_throughput_<device>_<recipes>.json, so it never replaces the full file) and updates
benchmarks/results/summary.json. Without the CIFAR-10 file it warns and measures the built-in shapes set; the
JSON's config.data says which (set VISSL_LITE_DATA to the datasets folder, or pass --data).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import SHARED_DATA, environment, load_cifar, update_summary, write_result
from torch.utils.data import DataLoader, Dataset

from vissl_lite.augment import build_augment

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_images(base: torch.Tensor, n: int, side: int) -> torch.Tensor:
    """uint8 (n, 3, side, side): the first ``n`` of ``base`` (CIFAR-10 train images, or the built-in shapes when
    the file is absent), resized once to ``side``."""
    x = base[:n]
    if x.shape[-1] != side:
        x = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True).round().clamp(0, 255)
        x = x.to(torch.uint8)
    return x


def blur_kernel(size: int) -> int:
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def torchvision_pipeline(size: int, recipe: str = "simclr"):
    from torchvision.transforms import v2

    if recipe == "crop_flip":
        return v2.Compose([v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(blur_kernel(size), sigma=(0.1, 2.0))], p=0.5),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


def albumentations_pipeline(size: int, recipe: str = "simclr"):
    import albumentations as A

    if recipe == "crop_flip":
        return A.Compose([A.RandomResizedCrop(size=(size, size), scale=(0.2, 1.0)), A.HorizontalFlip(p=0.5),
                          A.Normalize(mean=MEAN, std=STD)])
    k = blur_kernel(size)
    return A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(0.08, 1.0)),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8),
        A.ToGray(p=0.2),
        A.GaussianBlur(blur_limit=(k, k), sigma_limit=(0.1, 2.0), p=0.5),
        A.Normalize(mean=MEAN, std=STD),
    ])


class TwoViews(Dataset):
    def __init__(self, images: torch.Tensor, kind: str, size: int, recipe: str):
        self.images, self.kind, self.size, self.recipe = images, kind, size, recipe
        self.hwc = images.permute(0, 2, 3, 1).numpy() if kind == "albumentations" else None
        self.t = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if self.t is None:  # built in the worker
            make = torchvision_pipeline if self.kind == "torchvision" else albumentations_pipeline
            self.t = make(self.size, self.recipe)
        if self.kind == "torchvision":
            x = self.images[i]
            return self.t(x), self.t(x)
        x = self.hwc[i]
        return tuple(torch.from_numpy(self.t(image=x)["image"]).permute(2, 0, 1) for _ in range(2))


def time_loader(images: torch.Tensor, kind: str, size: int, batch: int, workers: int, repeats: int,
                recipe: str) -> list[float]:
    loader = DataLoader(TwoViews(images, kind, size, recipe), batch_size=batch, num_workers=workers,
                        persistent_workers=workers > 0, shuffle=False)
    rates = []
    for r in range(repeats + 1):  # pass 0 warms the workers up
        t0 = time.perf_counter()
        n = sum(v1.shape[0] for v1, _ in loader)
        if r:
            rates.append(n / (time.perf_counter() - t0))
    return rates


def time_ours(images: torch.Tensor, size: int, batch: int, repeats: int, device: torch.device,
              recipe: str) -> list[float]:
    aug = build_augment(recipe, size, 3, n_views=2).to(device)
    x = images.to(device)
    rates = []
    for r in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            views = aug(x[i:i + batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
        del views
        if r:
            rates.append(len(x) / (time.perf_counter() - t0))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED_DATA / "cifar10/cifar10.npz"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--recipes", default="simclr,crop_flip")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    t_start = time.time()
    cases = {32: dict(n=4096, side=32, batch=256), 224: dict(n=512, side=256, batch=64)}
    results = {}
    base, _, source = load_cifar(max(c["n"] for c in cases.values()), Path(args.data))  # read once; warns if absent
    for recipe in args.recipes.split(","):
        for size, c in cases.items():
            images = load_images(base, c["n"], c["side"])
            row = {"images": len(images), "source_side": c["side"], "batch": c["batch"]}
            print(f"{recipe} {size}px ...", flush=True)
            for name, rates in (
                    ("ours_device_batched", time_ours(images, size, c["batch"], args.repeats, device, recipe)),
                    ("torchvision_v2_dataloader", time_loader(images, "torchvision", size, c["batch"], args.workers,
                                                              args.repeats, recipe)),
                    ("albumentations_dataloader", time_loader(images, "albumentations", size, c["batch"],
                                                              args.workers, args.repeats, recipe))):
                row[name] = {"images_per_s": statistics.mean(rates),
                             "std": statistics.stdev(rates) if len(rates) > 1 else 0.0, "repeats": rates}
            ours = row["ours_device_batched"]["images_per_s"]
            row["ratio_vs_torchvision"] = ours / row["torchvision_v2_dataloader"]["images_per_s"]
            row["ratio_vs_albumentations"] = ours / row["albumentations_dataloader"]["images_per_s"]
            results[f"{recipe}_{size}px"] = row
    env = environment(device, ("albumentations",))
    out = {"benchmark": "augment_throughput", "device": device.type, "environment": env,
           "config": {"recipes": args.recipes.split(","), "views_per_image": 2, "dataloader_workers": args.workers,
                      "repeats": args.repeats, "data": source},
           "results": results, "wall_s": round(time.time() - t_start, 1)}
    part = "" if args.recipes == "simclr,crop_flip" else "_" + args.recipes.replace(",", "+")  # not the full file
    path = write_result(f"augment_throughput_{device.type}{part}.json", out)
    if any(k.startswith("simclr_") for k in results):
        update_summary({f"augment_vs_torchvision_{size}px" + ("" if device.type == "cpu" else f"_{device.type}"): {
            "ratio": round(results[f"simclr_{size}px"]["ratio_vs_torchvision"], 2), "machine": env["machine"],
            "recipe": "simclr", "source": path.name} for size in cases})
    print(f"{'case':>16} {'ours (img/s)':>16} {'torchvision v2':>16} {'albumentations':>16} {'vs tv':>7} "
          f"{'vs alb':>7}")
    for key, row in results.items():
        f = [row[k] for k in ("ours_device_batched", "torchvision_v2_dataloader", "albumentations_dataloader")]
        print(f"{key:>16} " + " ".join(f"{r['images_per_s']:>9.0f} ± {r['std']:<4.0f}" for r in f) +
              f" {row['ratio_vs_torchvision']:>6.2f}x {row['ratio_vs_albumentations']:>6.2f}x")
    print(f"machine: {env['machine']}; written to {path}")


if __name__ == "__main__":
    main()
