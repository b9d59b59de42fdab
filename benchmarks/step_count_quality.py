"""Does our SimCLR's probe top-1 on PneumoniaMNIST fall with more training steps? A follow-up to the equal-budget
benchmark, whose 28 seeds showed ours' top-1 lower on the faster VM (about 1,080 steps in 4 minutes) than on the
slower one (about 700), while lightly's did not. Budgets here are step counts, so the machine's speed and load do
not matter: for each seed, one side's pipeline with the equal-budget recipe (``equal_budget_quality.RECIPE``,
schedule over the fraction of steps) trains once for each step count, then the same linear probe and kNN.
``--side lightly`` runs the lightly pipeline of the equal-budget benchmark instead of ours, to tell whether a
change with the step count belongs to our views or to training longer on this data.

    python benchmarks/step_count_quality.py [--data ../shared/data/pneumoniamnist/pneumoniamnist.npz]
        [--steps 700,1100] [--seeds 0,1,2] [--side vissl_lite|lightly]

Writes benchmarks/results/step_count_quality_<device>.json (``_lightly`` added for the lightly side, then
``--suffix``): every run, the mean per step count and the paired deltas (each step count minus the first) with
their standard errors.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
from _common import SHARED_DATA, environment, write_result
from equal_budget_quality import RECIPE, run_side

from vissl_lite.config import make_config
from vissl_lite.data import load_split
from vissl_lite.eval.probe import load_eval_splits

KEYS = ("linear_probe_top1", "linear_probe_auroc", "linear_probe_val_top1", "linear_probe_balanced_accuracy",
        "knn_top1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(SHARED_DATA / "pneumoniamnist/pneumoniamnist.npz"))
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--steps", default="700,1100", help="comma list of step budgets; deltas are against the first")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--side", default="vissl_lite", choices=("vissl_lite", "lightly"),
                   help="whose pipeline trains (the probe is vissl_lite's on both)")
    p.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers")
    p.add_argument("--suffix", default="",
                   help="added to the results file's name (after a '_'), to keep an earlier run's file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"{args.data} not found: pass --data PATH to a MedMNIST .npz (e.g. pneumoniamnist.npz)")
    budgets = [int(s) for s in args.steps.split(",")]
    if len(budgets) < 2 or min(budgets) < 1:
        raise SystemExit(f"--steps needs two or more positive step counts, got {args.steps!r}")
    device = torch.device(args.device)
    env, t0, runs = environment(device), time.time(), []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = make_config("simclr_quickstart", data=args.data, image_size=args.image_size, seed=seed,
                          device=str(device), progress=False, knn_k=[20], **RECIPE)
        train_set = load_split(cfg.data, "train", cfg.image_size, progress=False)
        eval_splits = load_eval_splits(cfg, train_set.channels)
        row = {"seed": seed}
        for n in budgets if seed % 2 == 0 else budgets[::-1]:  # alternate the order with the seed
            print(f"seed {seed}, {args.side}: {n} steps ...", flush=True)
            r = run_side(args.side, cfg, train_set, eval_splits, 0.0, args.workers, device, max_steps=n)
            row[str(n)] = r
            print(f"  probe top-1 {r['linear_probe_top1']:.2f}, AUROC {r['linear_probe_auroc']:.2f}, "
                  f"kNN {r['knn_top1']:.2f} ({r['train']['seconds']:.0f} s)", flush=True)
        runs.append(row)
        summary, deltas, path = summarise(runs, budgets, args, env, device, t0)
    print(f"\n{'steps':>6} " + " ".join(f"{k:>31}" for k in KEYS))
    for n in budgets:
        print(f"{n:>6} " + " ".join(f"{summary[str(n)][k]:>31.2f}" for k in KEYS))
    for n, dk in deltas.items():
        for k, d in dk.items():
            se = "" if d["sem"] is None else f" ± {d['sem']:.2f}"
            print(f"{n} - {budgets[0]} steps, {k}: {d['mean']:+.2f}{se} ({d['seeds']} seeds)")
    print(f"written to {path}")


def summarise(runs: list, budgets: list, args, env: dict, device, t0: float) -> tuple[dict, dict, Path]:
    """Means per step count and paired deltas against the first; writes the JSON (after every seed, so a stopped
    run keeps what it finished)."""
    summary = {str(n): {k: statistics.mean(r[str(n)][k] for r in runs) for k in KEYS} for n in budgets}
    deltas = {}
    for n in budgets[1:]:
        deltas[str(n)] = {}
        for k in KEYS:
            d = [r[str(n)][k] - r[str(budgets[0])][k] for r in runs]
            sem = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
            deltas[str(n)][k] = {"mean": statistics.mean(d), "sem": sem, "seeds": len(d)}
    out = {"benchmark": "step_count_quality", "device": device.type, "environment": env,
           "config": {"side": args.side, "data": Path(args.data).name, "image_size": args.image_size, "steps": budgets,
                      "recipe": RECIPE, "lr_schedule": "5% warm-up, cosine over the steps",
                      "probe": "vissl_lite linear probe + kNN k=20"},
           "runs": runs, "summary": summary, "paired_deltas_vs_first": deltas, "wall_s": round(time.time() - t0, 1)}
    side = "" if args.side == "vissl_lite" else f"_{args.side}"
    suffix = f"_{args.suffix.lstrip('_')}" if args.suffix else ""
    path = write_result(f"step_count_quality_{device.type}{side}{suffix}.json", out)
    return summary, deltas, path


if __name__ == "__main__":
    main()
