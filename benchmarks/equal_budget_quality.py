"""Quality at equal wall-clock budget: SimCLR with vissl_lite's pipeline and with lightly's reference pipeline for the
same number of minutes on a MedMNIST set, then the same linear probe (and kNN) on both frozen backbones.

    pip install lightly   # benchmark-only dependency
    python benchmarks/equal_budget_quality.py [--data ../shared/data/pneumoniamnist/pneumoniamnist.npz]
        [--minutes 5] [--seeds 0]

Both sides train the same ResNet-18 (timm, ImageNet stem: the quickstart's CPU-sized choice; the small-input stem
costs ~16x the compute at 28 px and would leave a few hundred steps in the budget) with the same recipe:
SimCLR's CIFAR variant (crops of 20-100%, flip, colour jitter at strength 0.5 with p=0.8, grayscale 0.2, no blur;
on one-channel images jitter reduces to brightness and contrast on both sides), NT-Xent at temperature 0.2, a
512-512-128 projection head with BatchNorm, batch 128, AdamW (lr 2e-3, weight decay 1e-4). The learning rate is a
function of the elapsed fraction of the budget (5% linear warm-up, then cosine to 0), so each side completes its
schedule in the budget, however many steps it fits.

- ours: the uint8 set on the device, the batched ``simclr`` views, vissl_lite's SimCLR module, channels-last.
- lightly: ``SimCLRTransform`` on PIL images in a DataLoader with 2 workers, ``SimCLRProjectionHead``,
  ``NTXentLoss``.

Evaluation is vissl_lite's linear probe and kNN (k=20) protocol on the set's train/val/test splits, identical for
both backbones. Writes benchmarks/results/equal_budget_quality_<device>.json and the
``probe_top1_delta_vs_lightly_equal_budget`` entry of summary.json (points, ours minus lightly, mean over seeds).
Other data (e.g. ``--data ../shared/data/cifar10/cifar10.npz --image-size 32``, a set whose test split has the
training split's class balance) writes equal_budget_quality_<device>_<data name>.json and leaves summary.json,
whose headline is PneumoniaMNIST's, alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
from _common import RESULTS, SHARED_DATA, environment, machine, update_summary, write_result
from pretrain_throughput import LightlySimCLR, PILViews, cycle
from torch.utils.data import DataLoader

from vissl_lite import runs
from vissl_lite.augment import build_augment, default_stats
from vissl_lite.backbones import create_backbone
from vissl_lite.config import make_config
from vissl_lite.data import load_split, make_loader
from vissl_lite.eval.probe import load_eval_splits, run_evaluations
from vissl_lite.train import build_optimizer

RECIPE = dict(backbone="resnet18", small_input=False, batch_size=128, optimizer="adamw", lr=2e-3,
              weight_decay=1e-4, method_args={"temperature": 0.2}, augment="simclr",
              augment_args={"strength": 0.5, "p_blur": 0.0, "scale": [0.2, 1.0]})
WARMUP = 0.05


def lr_at_fraction(frac: float, base: float) -> float:
    if frac < WARMUP:
        return base * max(frac, 1e-3) / WARMUP
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - WARMUP) / (1 - WARMUP))))


class Backbone(torch.nn.Module):
    """What run_evaluations needs from a method module: ``backbone`` and ``embed``."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def train_for(budget_s: float, batches, make_views, model, optimizer, base_lr: float, channels_last: bool,
              max_steps: int = 0) -> dict:
    """Step until the budget is spent; returns steps and images seen. The clock starts at the first step (after
    model and loader setup, which both sides pay outside the budget) and includes data waits. With ``max_steps``
    the budget is that many steps instead (the schedule follows the fraction of steps; the machine's speed no
    longer matters)."""
    model.train()
    steps, loss = 0, float("nan")
    t0 = time.perf_counter()
    while ((steps < max_steps) if max_steps else (elapsed := time.perf_counter() - t0) < budget_s):
        frac = steps / max_steps if max_steps else elapsed / budget_s
        for group in optimizer.param_groups:
            group["lr"] = lr_at_fraction(frac, base_lr)
        x, _ = next(batches)
        views = make_views(x)
        if channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        out = model(views)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        steps += 1
        if steps % 20 == 0:
            loss = float(out["loss"].detach())
            if not math.isfinite(loss):
                raise RuntimeError(f"loss became {loss} at step {steps}")
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1),
            "final_loss": round(float(out["loss"].detach()), 4)}


def run_side(side: str, cfg, train_set, eval_splits, budget_s: float, workers: int, device,
             max_steps: int = 0) -> dict:
    channels = train_set.channels
    mean, std = default_stats(channels)
    torch.manual_seed(cfg.seed)
    if side == "vissl_lite":
        model = runs.to_channels_last(runs.build_model(cfg, channels).to(device))
        loader = make_loader(train_set, cfg.batch_size, device, shuffle=True, drop_last=True, seed=cfg.seed)
        aug = build_augment(cfg.augment, cfg.image_size, channels, views=2, **cfg.augment_args).to(device)
        batches, make_views, channels_last = cycle(loader), aug, runs.use_channels_last(model)
    else:
        from lightly.transforms import SimCLRTransform

        a = cfg.augment_args
        transform = SimCLRTransform(input_size=cfg.image_size, cj_strength=a["strength"], min_scale=a["scale"][0],
                                    gaussian_blur=a["p_blur"], normalize={"mean": list(mean), "std": list(std)})
        backbone = create_backbone(cfg.backbone, channels, cfg.image_size, small_input=cfg.small_input)
        model = LightlySimCLR(backbone, cfg.method_args["temperature"]).to(device)
        loader = DataLoader(PILViews(train_set.images, transform), batch_size=cfg.batch_size, shuffle=True,
                            drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                            generator=torch.Generator().manual_seed(cfg.seed))
        batches = (([v.to(device) for v in views], y) for views, y in cycle(loader))
        make_views, channels_last = (lambda views: views), False
    optimizer = build_optimizer(model, cfg)
    next(batches)  # start the workers outside the budget (ours has nothing to start)
    train = train_for(budget_s, batches, make_views, model, optimizer, cfg.lr, channels_last, max_steps)
    train["images_per_s"] = round(train["steps"] * cfg.batch_size / train["seconds"], 1)
    model.backbone.to(memory_format=torch.contiguous_format)
    ev = run_evaluations(Backbone(model.backbone), cfg, device, baseline=False, splits=eval_splits)
    probe, metrics = ev["linear_probe"], ev["linear_probe"].get("metrics", {})
    # top-1 on test depends on where the probe's threshold falls, and PneumoniaMNIST's test split has another class
    # balance than train and val: val top-1 (train's balance) and balanced accuracy (equal weight per class) tell a
    # threshold shift from a difference in the features
    return {"train": train, "linear_probe_top1": probe["top1"], "linear_probe_val_top1": probe.get("val_top1"),
            "linear_probe_balanced_accuracy": metrics.get("balanced_accuracy"),
            "linear_probe_confusion": metrics.get("confusion_matrix"), "linear_probe_lr": probe.get("lr"),
            "linear_probe_auroc": metrics.get("auroc_macro"),
            "knn_top1": ev["knn"]["top1"][cfg.knn_k[0]] if isinstance(ev["knn"]["top1"], dict) else ev["knn"]["top1"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED_DATA / "pneumoniamnist/pneumoniamnist.npz"))
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per side")
    p.add_argument("--seeds", default="0", help="comma list; each seed trains both sides")
    p.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers")
    p.add_argument("--add", action="store_true",
                   help="keep the seeds already in the results file (same data, budget and recipe) and add these")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"{args.data} not found: pass --data PATH to a MedMNIST .npz (e.g. pneumoniamnist.npz)")
    device = torch.device(args.device)
    t0 = time.time()
    runs_by_seed = []
    tag = "" if Path(args.data).stem == "pneumoniamnist" else f"_{Path(args.data).stem}"  # the headline's set: no tag
    previous = RESULTS / f"equal_budget_quality_{device.type}{tag}.json"
    if args.add and previous.is_file():
        old = json.loads(previous.read_text())
        same = (old["config"]["data"], old["config"]["minutes_per_side"], old["config"]["recipe"]) == \
            (Path(args.data).name, args.minutes, json.loads(json.dumps(RECIPE)))
        if not same:
            raise SystemExit(f"--add: {previous} has another data set, budget or recipe; run without --add")
        new = {int(s) for s in args.seeds.split(",")}
        # each kept seed remembers the commit it ran at (the file's environment describes only this run)
        runs_by_seed = [{"git_sha": old["environment"].get("git_sha"), **r} for r in old["runs"]
                        if r["seed"] not in new]
    env = environment(device, ("lightly",))
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = make_config("simclr_quickstart", data=args.data, image_size=args.image_size, seed=seed,
                          device=str(device), progress=False, knn_k=[20], **RECIPE)
        train_set = load_split(cfg.data, "train", cfg.image_size, progress=False)
        eval_splits = load_eval_splits(cfg, train_set.channels)
        row = {"seed": seed, "git_sha": env["git_sha"], "machine": env["machine"]}
        # alternate which side goes first with the seed, so slow drift on the machine does not favour one
        order = ("vissl_lite", "lightly") if seed % 2 == 0 else ("lightly", "vissl_lite")
        for side in order:
            print(f"seed {seed}: {side} for {args.minutes} min ...", flush=True)
            row[side] = run_side(side, cfg, train_set, eval_splits, 60 * args.minutes, args.workers, device)
            print(f"  {row[side]['train']['steps']} steps, probe top-1 {row[side]['linear_probe_top1']:.2f}, "
                  f"kNN {row[side]['knn_top1']:.2f}", flush=True)
        row["probe_top1_delta"] = row["vissl_lite"]["linear_probe_top1"] - row["lightly"]["linear_probe_top1"]
        runs_by_seed.append(row)
    runs_by_seed.sort(key=lambda r: r["seed"])
    deltas = [r["probe_top1_delta"] for r in runs_by_seed]

    def recorded(key):
        """The seeds whose rows have ``key`` on both sides (rows from older commits lack the newer measures)."""
        return [r for r in runs_by_seed if all(r[side].get(key) is not None for side in ("vissl_lite", "lightly"))]

    def mean_of(side, key):
        rows = recorded(key)
        return statistics.mean(r[side][key] for r in rows) if rows else None

    def paired(key):
        """Mean, standard error and seed count of ours minus lightly on ``key``, over the seeds that have it."""
        d = [r["vissl_lite"][key] - r["lightly"][key] for r in recorded(key)]
        if not d:
            return None
        return {"mean": statistics.mean(d), "sem": statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None,
                "seeds": len(d)}

    extra = ("linear_probe_auroc", "linear_probe_val_top1", "linear_probe_balanced_accuracy")
    summary = {side: {"linear_probe_top1": mean_of(side, "linear_probe_top1"), "knn_top1": mean_of(side, "knn_top1"),
                      **{k: mean_of(side, k) for k in extra},
                      "steps": statistics.mean(r[side]["train"]["steps"] for r in runs_by_seed)}
               for side in ("vissl_lite", "lightly")}
    summary["paired_deltas"] = {k: paired(k) for k in extra}
    summary["probe_top1_delta"] = statistics.mean(deltas)
    summary["knn_top1_delta"] = statistics.mean(r["vissl_lite"]["knn_top1"] - r["lightly"]["knn_top1"]
                                                for r in runs_by_seed)
    if summary["paired_deltas"]["linear_probe_auroc"] is not None:
        summary["probe_auroc_delta"] = summary["paired_deltas"]["linear_probe_auroc"]["mean"]
    std = statistics.stdev(deltas) if len(deltas) > 1 else None
    # standard error of the mean paired delta: the seed-to-seed spread is several points on these small test sets
    sem = None if std is None else std / math.sqrt(len(deltas))
    summary["probe_top1_delta_std"], summary["probe_top1_delta_sem"] = std, sem
    out = {"benchmark": "equal_budget_quality", "device": device.type, "environment": env,
           "config": {"data": Path(args.data).name, "image_size": args.image_size, "minutes_per_side": args.minutes,
                      "recipe": RECIPE, "lr_schedule": f"{WARMUP:.0%} warm-up, cosine over the budget",
                      "lightly_dataloader_workers": args.workers, "probe": "vissl_lite linear probe + kNN k=20"},
           "runs": runs_by_seed, "summary": summary, "wall_s": round(time.time() - t0, 1)}
    path = write_result(f"equal_budget_quality_{device.type}{tag}.json", out)
    key = "probe_top1_delta_vs_lightly_equal_budget" + ("" if device.type == "cpu" else f"_{device.type}")
    # seeds added over several sessions may come from several VMs: name this one only when every row is its
    machines = {r.get("machine") for r in runs_by_seed}
    where = machine(device) if machines == {env["machine"]} else \
        f"several {os.cpu_count()}-core VMs (each row's machine in runs[].machine, where recorded)"
    if not tag:
        update_summary({key: {"points": round(summary["probe_top1_delta"], 2), "machine": where,
                              "standard_error": None if sem is None else round(sem, 2),
                              "data": Path(args.data).stem, "minutes": args.minutes, "seeds": len(deltas),
                              "source": path.name}})
    print(f"\n{'':<12} {'steps':>7} {'probe top-1':>12} {'kNN top-1':>10}")
    for side in ("vissl_lite", "lightly"):
        s = summary[side]
        print(f"{side:<12} {s['steps']:>7.0f} {s['linear_probe_top1']:>12.2f} {s['knn_top1']:>10.2f}")
    print(f"probe top-1 delta (ours - lightly): {summary['probe_top1_delta']:+.2f} points"
          + (f" (standard error {sem:.2f}, {len(deltas)} seeds)" if sem is not None else "")
          + f"; machine {env['machine']}")
    for key, d in summary["paired_deltas"].items():
        if d is not None:
            sem = "" if d["sem"] is None else f" (standard error {d['sem']:.2f})"
            print(f"{key} delta: {d['mean']:+.2f}{sem} over {d['seeds']} seeds")


if __name__ == "__main__":
    main()
