"""End-to-end pretraining throughput: vissl_lite's pipeline against the lightly package's reference pipeline for the
same job, side by side in one process.

    pip install lightly   # benchmark-only dependency
    python benchmarks/pretrain_throughput.py [--jobs simclr,mae,dae] [--precision fp32,bf16] [--repeats 3]

Jobs (CIFAR-10 train images from ../shared/data at 32 px; the built-in shapes set when it is absent):

- simclr: ResNet-18 with the small-input stem (3x3 stride-1 conv, no max-pool), batch 128 (256 views), the SimCLR
  paper's augmentation (crop 8-100%, flip, colour jitter 0.8/0.8/0.8/0.2 with p=0.8, grayscale 0.2, blur 0.5),
  NT-Xent at temperature 0.5, a 2-layer 512-512-128 projection head, AdamW.
  - ours: the uint8 set on the device, vissl_lite's batched ``simclr`` views, its SimCLR module, channels-last.
  - lightly: ``SimCLRTransform(input_size=32)`` on PIL images in a DataLoader with 2 workers, ``NTXentLoss``,
    ``SimCLRProjectionHead(512, 512, 128)``, the same timm backbone built the same way.
- simclr_stem: the same with ResNet-18's ImageNet stem (the quickstart's CPU-sized model, ~16x less compute at
  32 px), where the data path is a larger share of each step.
- mae: ViT-Tiny, patch 4, batch 256, the mae_quickstart decoder; ours with ``crop_flip`` views, lightly with its
  ``MAETransform(input_size=32)`` in the DataLoader. Both train the same MAE module (lightly's MAE is a recipe of
  building blocks around a timm ViT, not a different model), so the difference is the data path.
- dae: ResNet-18 small-input, batch 128, the dae_quickstart denoising model. lightly has no denoising autoencoder;
  its side is ``MAETransform`` (crop 20-100% and flip, the same views) in the DataLoader feeding the same module.

Per step: data (waiting for the batch; for lightly this includes the workers' augmentation when they fall behind),
augmentation (ours, on the main device), forward, backward, optimizer step. Throughput is images per second over
timed steps after warm-up (which also starts the workers), mean and std over repeats, pipelines interleaved per
repeat so that drift on the machine hits both alike. On CUDA the breakdown comes from a separate pass with a
synchronize at each phase boundary; the throughput passes have none. Writes
benchmarks/results/pretrain_throughput_<device>.json and the ``simclr_throughput_vs_lightly`` entry of summary.json
(when that entry comes from ``--processes``, below, this run only adds ``ratio_one_process`` to it, on the same
machine).

Ours steps inside ``runs.keep_freed_memory``, as ``vissl-lite pretrain`` does on the CPU: glibc keeps freed memory
in the heap instead of unmapping each large tensor and page-faulting it back in at the next step. lightly's
pipeline, as its users run it, has glibc's defaults. So that the ratio can be read without that setting, the same
lightly pipeline (its model, loader and optimizer) is also stepped inside ``keep_freed_memory``, as a third row
``lightly_keep_freed`` (``ratio_vs_lightly_keep_freed``). Two limits of doing this in one process (README, End to
end): each exit from the context trims the heap, so the first step of every repeat pays the page faults again;
and glibc keeps the thresholds the exit sets, which also cut the plain ``lightly`` row's faults, so after the
first exit that row no longer runs with glibc's untouched state. Set a ``MALLOC_*`` variable to run every side
with glibc as configured (the JSON records them).

``--processes N`` runs each pipeline in its own fresh Python process instead, N rounds per job in alternating
order (ours, lightly, lightly_keep_freed, then the reverse), each process doing the warm-up and the repeats. This is
how users run each tool: ours holds the heap setting for the whole measurement, as ``run_loop`` holds it for a
whole run, and lightly starts from glibc's untouched state. Writes pretrain_throughput_<device>_processes.json; for
SimCLR it is the ``simclr_throughput_vs_lightly`` headline (the one-process ratio kept beside it as
``ratio_one_process`` when pretrain_throughput_<device>.json is there and was measured on the same machine).

``--batch-size N`` sets every job's batch on both sides (a GPU wants more than the CPU-sized 128) and adds
``_batchN`` to the file name, so the jobs' own batch sizes keep their files. On the CPU such a run leaves the
summary.json headline alone (the CPU target is at the jobs' own batch); on a GPU the headline names its batch size,
and the last run stands. A one-process ratio is put beside a separate-processes headline only at the same batch.

``--compile`` adds a third pipeline to each job, ours with ``--compile`` (the model's forward and backward through
torch.compile; the warm-up absorbs the compile), and writes pretrain_throughput_<device>_compile.json instead,
leaving summary.json (the default configuration's headline) alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, environment, load_cifar, machine, update_summary, write_result
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vissl_lite import runs
from vissl_lite.augment import build_augment
from vissl_lite.backbones import create_backbone
from vissl_lite.config import make_config
from vissl_lite.data import ImageSet, make_loader
from vissl_lite.train import build_optimizer

PHASES = ("data", "augment", "forward", "backward", "step")
JOBS = {
    "simclr": dict(recipe="simclr_quickstart", backbone="resnet18", small_input=True, batch_size=128,
                   method_args={"temperature": 0.5}, augment="simclr", augment_args={}),
    # the quickstart's CPU-sized model (ImageNet stem, ~16x less compute at 32 px): the data path's share grows
    "simclr_stem": dict(recipe="simclr_quickstart", backbone="resnet18", small_input=False, batch_size=128,
                        method_args={"temperature": 0.5}, augment="simclr", augment_args={}),
    "mae": dict(recipe="mae_quickstart", backbone="vit_tiny_patch16_224", batch_size=256, augment="crop_flip",
                augment_args={}),
    "dae": dict(recipe="dae_quickstart", backbone="resnet18", small_input=True, batch_size=128, augment="crop_flip",
                augment_args={}),
}


class PILViews(Dataset):
    """What a lightly user writes: PIL images through the transform, in DataLoader workers."""

    def __init__(self, images: torch.Tensor, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) uint8
        if self.images.shape[-1] == 1:
            self.images = self.images[..., 0]  # (N, H, W): PIL's 8-bit grayscale mode
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        views = self.transform(img)
        return views if isinstance(views, list) else [views], 0


class LightlySimCLR(torch.nn.Module):
    """lightly's SimCLR recipe around the same timm backbone: SimCLRProjectionHead + NTXentLoss."""

    def __init__(self, backbone: torch.nn.Module, temperature: float):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(backbone.num_features, backbone.num_features, 128)
        self.criterion = NTXentLoss(temperature=temperature)

    def forward(self, views: list[torch.Tensor], labels=None) -> dict:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        return {"loss": self.criterion(z0, z1)}


def cycle(loader):
    """Endless batches; each new epoch of a DeviceLoader reshuffles."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


class Pipeline:
    """One side of the comparison: a batch source, a view maker (identity for lightly: views come from the
    loader), a model and an optimizer, stepped and timed phase by phase."""

    def __init__(self, name: str, batches, make_views, model, optimizer, device, amp_dtype, channels_last: bool,
                 batch_size: int, keep_freed: bool = False):
        self.name, self.batches, self.make_views, self.model, self.optimizer = name, batches, make_views, model, \
            optimizer
        self.device, self.amp_dtype, self.channels_last, self.batch_size = device, amp_dtype, channels_last, batch_size
        self.keep_freed = keep_freed  # step inside runs.keep_freed_memory, as run_loop does

    def steps(self, n: int, sync: bool) -> tuple[float, dict]:
        """Run ``n`` steps; returns (seconds, seconds per phase). Phase times are only exact with ``sync`` on
        CUDA (on CPU every op is synchronous)."""
        device = self.device

        def mark():
            if sync and device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter()

        phases = dict.fromkeys(PHASES, 0.0)
        self.model.train()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        heap = runs.keep_freed_memory(device) if self.keep_freed else contextlib.nullcontext()
        with heap:
            return self._steps(n, mark, phases)

    def _steps(self, n: int, mark, phases: dict) -> tuple[float, dict]:
        device = self.device
        t_start = t = time.perf_counter()
        for _ in range(n):
            x, _ = next(self.batches)
            t1 = mark()
            views = self.make_views(x)
            if self.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            t2 = mark()
            with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                loss = self.model(views)["loss"]
            t3 = mark()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t4 = mark()
            self.optimizer.step()
            t5 = mark()
            for key, dt in zip(PHASES, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                phases[key] += dt
            t = t5
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t_start, phases


def build_pair(job: str, images: torch.Tensor, device: torch.device, amp_dtype, workers: int,
               compiled: bool = False, only: str | None = None) -> list[Pipeline]:
    """The pipelines compared for ``job``: ours, lightly, and (when the heap setting applies) lightly stepped with
    it; with ``only``, just the one of that name (its model built as in the full set)."""
    spec = dict(JOBS[job])
    cfg = make_config(spec.pop("recipe"), data="shapes", image_size=32, device=str(device), **spec)
    channels = images.shape[1]
    pipelines = []

    # ---- ours: the pieces pretrain() uses, in the order run_loop calls them (and, with ``compiled``, again with
    # the model compiled in place as run_loop does for --compile)
    data = ImageSet(name="cifar10", split="train", labels=torch.zeros(len(images), dtype=torch.long),
                    channels=channels, image_size=32, num_classes=0, images=images)
    for name in ("vissl_lite", "vissl_lite_compiled") if compiled else ("vissl_lite",):
        loader = make_loader(data, cfg.batch_size, device, shuffle=True, drop_last=True, seed=0)
        model = runs.to_channels_last(runs.build_model(cfg, channels).to(device))
        aug = build_augment(cfg.augment, 32, channels, views=model.views, **cfg.augment_args).to(device)
        optimizer = build_optimizer(model, cfg)
        if name.endswith("compiled"):
            model.compile()
        pipelines.append(Pipeline(name, cycle(loader), aug, model, optimizer, device, amp_dtype,
                                  runs.use_channels_last(model), cfg.batch_size, keep_freed=True))

    # ---- lightly: its transform in a DataLoader; the same backbone
    from lightly.transforms import MAETransform, SimCLRTransform

    if job.startswith("simclr"):
        transform = SimCLRTransform(input_size=32)  # the paper's recipe: lightly's defaults
        torch.manual_seed(cfg.seed)
        backbone = create_backbone(cfg.backbone, channels, 32, small_input=cfg.small_input)
        model = LightlySimCLR(backbone, cfg.method_args["temperature"]).to(device)
    else:
        transform = MAETransform(input_size=32, min_scale=0.2)
        model = runs.build_model(cfg, channels).to(device)
    loader = DataLoader(PILViews(images, transform), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda")

    def to_device(batch):
        views, y = batch
        return [v.to(device, non_blocking=True) for v in views], y

    batches = (to_device(b) for b in cycle(loader))
    pipelines.append(Pipeline("lightly", batches, lambda views: views, model, build_optimizer(model, cfg), device,
                              amp_dtype, False, cfg.batch_size))
    if heap_kept(device):  # the same lightly pipeline (model, loader, optimizer) stepped with ours' heap setting
        pipelines.append(copy.copy(pipelines[-1]))
        pipelines[-1].name, pipelines[-1].keep_freed = "lightly_keep_freed", True
    if only is not None:
        return [p for p in pipelines if p.name == only]
    return pipelines


def heap_kept(device: torch.device) -> bool:
    """Whether ours' steps run with freed memory kept in the heap (runs.keep_freed_memory: CPU, glibc, no MALLOC_*
    tuning of the user's)."""
    with runs.keep_freed_memory(device) as kept:
        return kept


def time_pipelines(pipelines: list[Pipeline], device, args) -> tuple[dict, dict]:
    """Warm-up, then ``args.repeats`` timed passes of every pipeline in turn: (images/s per repeat, summed phase
    seconds) by pipeline name."""
    for p in pipelines:  # warm-up: workers start, oneDNN picks kernels, allocator settles
        p.steps(args.warmup, sync=False)
    rates = {p.name: [] for p in pipelines}
    phases = {p.name: dict.fromkeys(PHASES, 0.0) for p in pipelines}
    for _ in range(args.repeats):
        for p in pipelines:
            seconds, ph = p.steps(args.steps, sync=False)
            rates[p.name].append(args.steps * p.batch_size / seconds)
            for k in PHASES:
                phases[p.name][k] += ph[k]
    if device.type == "cuda":  # phase times need a synchronize at each boundary: one extra pass per pipeline
        for p in pipelines:
            phases[p.name] = p.steps(args.steps, sync=True)[1]
    return rates, phases


def make_row(batch_size: int, rates: dict, phases: dict, steps_timed: dict, args) -> dict:
    """One job's result: images/s (mean and std over repeats or processes), the phase breakdown and the ratios.
    ``steps_timed``: by pipeline, the number of steps its summed phase seconds cover."""
    row = {"batch_size": batch_size, "steps_per_repeat": args.steps}
    for name in rates:
        total = sum(phases[name].values())
        row[name] = {"images_per_s": statistics.mean(rates[name]),
                     "std": statistics.stdev(rates[name]) if len(rates[name]) > 1 else 0.0,
                     "repeats": rates[name],
                     "breakdown_share": {k: v / total for k, v in phases[name].items()},
                     "ms_per_step": {k: 1000 * v / steps_timed[name] for k, v in phases[name].items()}}
    row["ratio_vs_lightly"] = row["vissl_lite"]["images_per_s"] / row["lightly"]["images_per_s"]
    if "lightly_keep_freed" in row:
        row["ratio_vs_lightly_keep_freed"] = (row["vissl_lite"]["images_per_s"]
                                              / row["lightly_keep_freed"]["images_per_s"])
    if "vissl_lite_compiled" in row:
        row["compiled_ratio_vs_lightly"] = row["vissl_lite_compiled"]["images_per_s"] / row["lightly"]["images_per_s"]
        row["compiled_vs_eager"] = row["vissl_lite_compiled"]["images_per_s"] / row["vissl_lite"]["images_per_s"]
    return row


def measure(job: str, precision: str, images: torch.Tensor, device, args) -> dict:
    """Every pipeline of ``job`` in this process, interleaved per repeat."""
    amp_dtype = torch.bfloat16 if precision == "bf16" else None
    pipelines = build_pair(job, images, device, amp_dtype, args.workers, args.compile)
    rates, phases = time_pipelines(pipelines, device, args)
    per = args.steps * (1 if device.type == "cuda" else args.repeats)
    row = make_row(pipelines[0].batch_size, rates, phases, {p.name: per for p in pipelines}, args)
    del pipelines
    return row


def measure_one(job: str, precision: str, name: str, images: torch.Tensor, device, args) -> dict:
    """The child side of ``--processes``: pipeline ``name`` alone in this fresh process. A pipeline that keeps
    freed memory holds the setting across warm-up and repeats, as run_loop holds it across a run (entering and
    leaving it per repeat would trim the heap each time)."""
    amp_dtype = torch.bfloat16 if precision == "bf16" else None
    (pipeline,) = build_pair(job, images, device, amp_dtype, args.workers, only=name)
    held, pipeline.keep_freed = pipeline.keep_freed, False
    with runs.keep_freed_memory(device) if held else contextlib.nullcontext():
        rates, phases = time_pipelines([pipeline], device, args)
    return {"images_per_s": statistics.mean(rates[name]), "repeats": rates[name], "phases": phases[name],
            "keep_freed_memory": held}


def pipeline_names(device) -> list[str]:
    return ["vissl_lite", "lightly"] + (["lightly_keep_freed"] if heap_kept(device) else [])


def measure_processes(job: str, precision: str, device, args) -> dict:
    """Each pipeline of ``job`` in its own fresh process, ``args.processes`` rounds in alternating order; a
    process's images/s is the mean of its repeats, and the row's mean and std are over processes."""
    names = pipeline_names(device)
    rates = {n: [] for n in names}
    phases = {n: dict.fromkeys(PHASES, 0.0) for n in names}
    for r in range(args.processes):
        for name in names if r % 2 == 0 else names[::-1]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--jobs", job, "--precision",
                   precision, "--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats",
                   str(args.repeats), "--workers", str(args.workers), "--images", str(args.images),
                   "--batch-size", str(args.batch_size), "--device", str(device)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                raise SystemExit(f"the {name} process for {job} {precision} failed (exit {done.returncode}):\n"
                                 f"{done.stderr[-3000:]}")
            one = json.loads(lines[-1][len("RESULT "):])
            rates[name].append(one["images_per_s"])
            for k in PHASES:
                phases[name][k] += one["phases"][k]
            print(f"    round {r + 1} {name}: {one['images_per_s']:.1f} img/s", flush=True)
    per = args.processes * args.steps * (1 if device.type == "cuda" else args.repeats)
    batch_size = JOBS[job]["batch_size"]
    return make_row(batch_size, rates, phases, dict.fromkeys(names, per), args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", default=",".join(JOBS), help=f"comma list of {', '.join(JOBS)}")
    p.add_argument("--precision", default="fp32,bf16", help="comma list of fp32, bf16 (autocast on both sides)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers")
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=0,
                   help="images per step for every job, both sides (0: each job's own, as listed above); a GPU "
                        "wants more than the CPU-sized 128")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also time ours with --compile (a third pipeline)")
    p.add_argument("--processes", type=int, default=0, metavar="N",
                   help="run each pipeline in its own fresh process, N alternating rounds (0: all in this process)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: the child process of --processes
    args = p.parse_args()
    for flag, given, valid in (("--jobs", args.jobs, JOBS), ("--precision", args.precision, ("fp32", "bf16"))):
        unknown = [v for v in given.split(",") if v not in valid]
        if unknown:
            p.error(f"{flag}: unknown {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        import lightly  # noqa: F401  (the reference side of every job)
    except ImportError:
        p.error("the lightly package is the baseline here and is not installed: pip install -e \".[bench]\"")
    if args.processes < 0 or (args.processes and args.compile):
        p.error("--processes takes a number of rounds >= 1 (0: one process) and does not combine with --compile")
    if args.batch_size < 0 or args.batch_size > args.images:
        p.error(f"--batch-size {args.batch_size}: give 1 to --images ({args.images}), or 0 for each job's own")
    for job in JOBS.values() if args.batch_size else ():
        job["batch_size"] = args.batch_size
    device = torch.device(args.device)
    t0 = time.time()
    if args.one:
        images, _, _ = load_cifar(args.images)
        print("RESULT " + json.dumps(measure_one(args.jobs, args.precision, args.one, images, device, args)))
        return
    images, _, source = load_cifar(args.images) if not args.processes else (None, None, load_cifar(16)[2])
    results = {}
    for job in args.jobs.split(","):
        for precision in args.precision.split(","):
            print(f"{job} {precision} ...", flush=True)
            if args.processes:
                row = measure_processes(job, precision, device, args)
            else:
                row = measure(job, precision, images, device, args)
            results[f"{job}_{precision}"] = row
            print(f"  ours {row['vissl_lite']['images_per_s']:.1f} img/s, lightly {row['lightly']['images_per_s']:.1f}"
                  f" img/s: {row['ratio_vs_lightly']:.2f}x", flush=True)
            if "lightly_keep_freed" in row:
                print(f"  lightly with ours' heap setting {row['lightly_keep_freed']['images_per_s']:.1f} img/s: "
                      f"{row['ratio_vs_lightly_keep_freed']:.2f}x", flush=True)
            if args.compile:
                print(f"  ours compiled {row['vissl_lite_compiled']['images_per_s']:.1f} img/s: "
                      f"{row['compiled_ratio_vs_lightly']:.2f}x lightly, {row['compiled_vs_eager']:.2f}x ours eager",
                      flush=True)
    env = environment(device, ("lightly",))
    out = {"benchmark": "pretrain_throughput", "device": device.type, "environment": env,
           "config": {"jobs": {k: JOBS[k] for k in args.jobs.split(",")}, "image_size": 32,
                      "lightly_dataloader_workers": args.workers, "timed_steps_per_repeat": args.steps,
                      "warmup_steps": args.warmup, "repeats": args.repeats, "images": args.images, "data": source,
                      "mode": (f"separate processes, {args.processes} alternating rounds" if args.processes
                               else "one process, pipelines interleaved per repeat"),
                      "compiled_pipeline": args.compile, "keep_freed_memory": heap_kept(device),
                      "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}},
           "results": results, "wall_s": round(time.time() - t0, 1)}
    full = args.jobs == p.get_default("jobs") and args.precision == p.get_default("precision")
    part = "" if full else f"_{args.jobs.replace(',', '+')}_{args.precision.replace(',', '+')}"  # a partial run
    part += f"_batch{args.batch_size}" if args.batch_size else ""  # never replaces the jobs' own batch sizes
    mode = "_compile" if args.compile else "_processes" if args.processes else ""
    path = write_result(f"pretrain_throughput_{device.type}{mode}{part}.json", out)
    # the CPU headline is the jobs' own batch; on a GPU the entry names its batch (the last run's stands)
    if not args.compile and not (args.batch_size and device.type == "cpu") and \
            ("simclr_fp32" in results or "simclr_bf16" in results):
        key = "simclr_throughput_vs_lightly" + ("" if device.type == "cpu" else f"_{device.type}")
        headline = "simclr_fp32" if device.type == "cpu" else "simclr_bf16"  # each device's default precision
        if headline not in results:  # only the other precision ran: it is the one there is
            headline = "simclr_fp32" if headline == "simclr_bf16" else "simclr_bf16"
        entry = {"ratio": round(results[headline]["ratio_vs_lightly"], 2), "machine": machine(device),
                 "precision": headline.split("_")[1], "source": path.name,
                 "batch_size": results[headline]["batch_size"],
                 "ours_images_per_s": round(results[headline]["vissl_lite"]["images_per_s"], 1)}
        other = "simclr_bf16" if headline == "simclr_fp32" else "simclr_fp32"
        if other in results:
            entry[f"ratio_{other.split('_')[1]}"] = round(results[other]["ratio_vs_lightly"], 2)
        entry["mode"] = out["config"]["mode"]
        if args.processes:  # the one-process run's ratio for the same job, when there is one, beside it
            one_process = path.with_name(f"pretrain_throughput_{device.type}.json")
            if one_process.exists():
                saved = json.loads(one_process.read_text())
                same = saved.get("environment", {}).get("machine") == env["machine"]  # a ratio of another VM's
                row = saved["results"].get(headline) if same else None
                if row and row.get("batch_size") == entry["batch_size"]:  # never a ratio at another batch
                    entry["ratio_one_process"] = round(row["ratio_vs_lightly"], 2)
                    entry["source_one_process"] = one_process.name
        held = json.loads((RESULTS / "summary.json").read_text()).get(key, {}) \
            if (RESULTS / "summary.json").is_file() else {}
        if not args.processes and str(held.get("mode", "")).startswith("separate processes"):
            # the headline comes from separate processes: a one-process run only adds its ratio beside it, on the
            # same machine, and never replaces it
            if held.get("machine") == entry["machine"] and held.get("batch_size", entry["batch_size"]) == \
                    entry["batch_size"]:
                update_summary({key: held | {"ratio_one_process": entry["ratio"], "source_one_process": path.name}})
            else:
                print(f"note: summary.json's {key} is a separate-processes headline from another machine or batch "
                      "size; left as it is", flush=True)
        else:
            update_summary({key: entry})
    print(f"\n{'job':<14} {'ours (img/s)':>16} {'lightly (img/s)':>16} {'ratio':>6} {'ratio*':>6}   "
          "ours: data/aug/fwd/bwd/step %   lightly: data/fwd/bwd/step %")
    for name, row in results.items():
        o, lt = row["vissl_lite"], row["lightly"]
        so = "/".join(f"{100 * o['breakdown_share'][k]:.0f}" for k in PHASES)
        sl = "/".join(f"{100 * lt['breakdown_share'][k]:.0f}" for k in PHASES if k != "augment")
        print(f"{name:<14} {o['images_per_s']:>9.1f} ± {o['std']:<4.1f} {lt['images_per_s']:>9.1f} ± {lt['std']:<4.1f}"
              f" {row['ratio_vs_lightly']:>5.2f}x {row.get('ratio_vs_lightly_keep_freed', float('nan')):>5.2f}x   "
              f"{so:<28} {sl}")
    print("ratio*: against lightly's pipeline stepped with ours' heap setting (runs.keep_freed_memory)")
    print(f"machine: {env['machine']}; written to {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
