"""The model side of the end-to-end SimCLR comparison, with no data path: how much of ours / lightly comes from
memory layout and how much from how the two views go through the backbone.

    pip install lightly   # benchmark-only dependency
    python benchmarks/model_layout.py [--precision fp32] [--repeats 3] [--steps 3]

pretrain_throughput.py finds both pipelines of the small-input SimCLR job compute-bound on 2 CPU cores: data and
augmentation are under 1% of a step on either side, so its ratio is the ratio of the two model steps. This script
times those steps alone (forward, backward, optimizer step) on one fixed pair of views, in four variants:

- ours: vissl_lite's SimCLR module (both views in one backbone pass) with channels-last weights and views;
- ours_contiguous: the same module, contiguous (NCHW) weights and views;
- lightly: lightly's recipe as pretrain_throughput.py builds it (one backbone pass per view, contiguous);
- lightly_channels_last: the same, with channels-last weights and views.

Every variant runs with glibc's default allocator (no ``runs.keep_freed_memory``), so the comparison is of the
layouts alone; ``--keep-freed`` holds that setting around the whole measurement instead, for every variant, as
``vissl-lite pretrain`` holds it around a run (then large activations are not mapped and faulted in anew at every
step, which is most of what separates one pass over both views from one pass per view). Variants alternate within
each repeat, so drift on the machine hits all alike. The floating-point operations of one step (forward and
backward, counted once by ``torch.utils.flop_counter``) turn each rate into GFLOP/s, to compare with what the CPU
can do. Writes benchmarks/results/model_layout_<device>[_keep_freed].json; leaves summary.json alone.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import time

import torch
from _common import environment, write_result
from pretrain_throughput import JOBS, LightlySimCLR, Pipeline

from vissl_lite import runs
from vissl_lite.backbones import create_backbone
from vissl_lite.config import make_config
from vissl_lite.train import build_optimizer

VARIANTS = ("ours", "ours_contiguous", "lightly", "lightly_channels_last")


def build(variant: str, cfg, device: torch.device):
    torch.manual_seed(cfg.seed)
    if variant.startswith("ours"):
        model = runs.build_model(cfg, 3).to(device)
    else:
        backbone = create_backbone(cfg.backbone, 3, 32, small_input=cfg.small_input)
        model = LightlySimCLR(backbone, cfg.method_args["temperature"]).to(device)
    channels_last = variant in ("ours", "lightly_channels_last")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, build_optimizer(model, cfg), channels_last


def step_flops(pipeline) -> float:
    """Floating-point operations of one forward and backward pass of ``pipeline`` (its fixed views)."""
    from torch.utils.flop_counter import FlopCounterMode

    views, _ = next(pipeline.batches)
    with FlopCounterMode(display=False) as counter:
        pipeline.model(views)["loss"].backward()
    pipeline.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(cfg, views, device, amp_dtype, args) -> tuple[dict, dict]:
    """Images/s per repeat and floating-point operations per step, by variant."""
    runs_, flops = {}, {}
    for v in VARIANTS:
        model, optimizer, channels_last = build(v, cfg, device)
        vv = [x.contiguous(memory_format=torch.channels_last) if channels_last else x for x in views]
        # pretrain_throughput's stepper on one fixed batch; the views are laid out once, here, not per step
        runs_[v] = Pipeline(v, itertools.repeat((vv, None)), lambda x: x, model, optimizer, device, amp_dtype, False,
                            cfg.batch_size)
        flops[v] = step_flops(runs_[v])
        runs_[v].steps(args.warmup, sync=False)  # oneDNN picks kernels
    rates = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for v in VARIANTS:
            rates[v].append(args.steps * cfg.batch_size / runs_[v].steps(args.steps, sync=False)[0])
        print(f"repeat {r + 1}: " + ", ".join(f"{v} {rates[v][-1]:.1f}" for v in VARIANTS), flush=True)
    return rates, flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--keep-freed", action="store_true",
                   help="hold runs.keep_freed_memory (as vissl-lite pretrain does on the CPU) for every variant")
    args = p.parse_args()
    device = torch.device(args.device)
    amp_dtype = torch.bfloat16 if args.precision == "bf16" else None
    t_start = time.time()
    spec = dict(JOBS["simclr"])
    cfg = make_config(spec.pop("recipe"), data="shapes", image_size=32, device=str(device), **spec)
    gen = torch.Generator().manual_seed(0)
    views = [torch.randn(cfg.batch_size, 3, 32, 32, generator=gen).to(device) for _ in range(2)]  # normalised-like
    with runs.keep_freed_memory(device) if args.keep_freed else contextlib.nullcontext() as kept:
        rates, flops = measure(cfg, views, device, amp_dtype, args)
    results = {v: {"images_per_s": statistics.mean(x), "std": statistics.stdev(x) if len(x) > 1 else 0.0,
                   "repeats": x, "gflop_per_step": flops[v] / 1e9,
                   "gflop_per_s": flops[v] / 1e9 * statistics.mean(x) / cfg.batch_size} for v, x in rates.items()}
    mean = {v: results[v]["images_per_s"] for v in VARIANTS}
    ratios = {"ours_vs_lightly": mean["ours"] / mean["lightly"],
              "channels_last_gain_ours": mean["ours"] / mean["ours_contiguous"],
              "channels_last_gain_lightly": mean["lightly_channels_last"] / mean["lightly"],
              "per_view_passes_gain_contiguous": mean["lightly"] / mean["ours_contiguous"],
              "per_view_passes_gain_channels_last": mean["lightly_channels_last"] / mean["ours"]}
    env = environment(device, ("lightly",))
    out = {"benchmark": "model_layout", "device": device.type, "environment": env,
           "config": {"job": JOBS["simclr"], "image_size": 32, "precision": args.precision, "steps": args.steps,
                      "warmup_steps": args.warmup, "repeats": args.repeats, "keep_freed_memory": bool(kept)},
           "results": results, "ratios": ratios, "wall_s": round(time.time() - t_start, 1)}
    if args.keep_freed and not kept:
        print("note: --keep-freed asked, but the heap setting does not apply here (not glibc, or a MALLOC_* variable "
              "is set), so every variant ran with the allocator as configured", flush=True)
    path = write_result(f"model_layout_{device.type}{'_keep_freed' if kept else ''}.json", out)
    print(f"\n{'variant':<24} {'images/s':>14} {'GFLOP/s':>8}")
    for v in VARIANTS:
        r = results[v]
        print(f"{v:<24} {r['images_per_s']:>8.1f} ± {r['std']:<4.1f} {r['gflop_per_s']:>8.0f}")
    for k, x in ratios.items():
        print(f"{k:<36} {x:.2f}x")
    print(f"machine: {env['machine']}; written to {path}")


if __name__ == "__main__":
    main()
