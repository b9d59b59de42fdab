"""The pretraining loop: one plain loop for every method.

Per step: uint8 batch already on the device -> augment (no grad) -> method forward under autocast -> backward,
clip, step. The learning rate is a pure function of the step. The only device->host sync is at log steps, where a
device-side flag also tells whether any loss since the last check was NaN/inf; a bad loss stops the run before
the next checkpoint would be written, so the last checkpoint on disk is always a good one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import timm.optim
import torch
from torch import nn
from tqdm.auto import tqdm

from vissl_lite import dist, runs
from vissl_lite.augment import build_augment
from vissl_lite.config import (
    ConfigError,
    RunConfig,
    atomic_write_text,
    config_from_dict,
    make_config,
    save_config,
)
from vissl_lite.data import DataError, channel_note, data_name, load_split, make_loader, skipped_files
from vissl_lite.data.datasets import absolute_spec

# Keys that define what a checkpoint is; a resumed run must agree with them.
IDENTITY_KEYS = ("method", "method_args", "backbone", "small_input", "patch_size", "data", "image_size", "in_chans",
                 "window", "val_fraction", "batch_size", "optimizer", "seed", "augment", "augment_args", "mean", "std")
# Keys a resume may change (e.g. a lower lr after a NaN, more steps, a kNN monitor switched on): allowed, printed,
# and recorded in the checkpoint and metrics.json, since config.yaml then holds only the latest values.
SCHEDULE_KEYS = ("epochs", "max_steps", "lr", "min_lr", "weight_decay", "warmup_epochs", "clip_grad", "amp",
                 "knn_every")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or SIGINT stopped training at a step boundary (after writing a checkpoint when the run keeps one)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def _stop_requests():
    """Turn SIGTERM/SIGINT into a flag the loop checks after each step, so a kill from a scheduler or Ctrl-C ends
    on a step boundary with a checkpoint instead of mid-write. Off the main thread, signals cannot be caught and
    the flag stays down."""
    flag = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request(signum, frame):
        if flag["signum"] is not None:  # a second signal: stop now (run_loop says what is on disk)
            flag["second"] = signum
            raise KeyboardInterrupt
        flag["signum"] = signum

    previous = {s: signal.signal(s, request) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup from 0 to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at
    ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def default_out(cfg: RunConfig) -> Path:
    """runs/<method>-<data>-<time>, with -2, -3, ... when a run started in the same second has it."""
    base = Path("runs") / f"{cfg.method}-{data_name(cfg.data)}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def optimizer_kwargs(model: nn.Module, cfg: RunConfig) -> dict:
    """Constructor arguments beyond lr and weight decay: momentum for SGD and LARS; for Adam and AdamW on CPU or
    CUDA, torch's fused kernel. The default on CPU is a Python loop of elementwise ops per tensor: 36 ms per step
    for ResNet-18's 11M parameters on 2 cores against 9 ms fused (channels-last), 13% of a quickstart-model step in
    the end-to-end benchmark. Build the optimizer after moving the model to its device."""
    if cfg.optimizer in ("sgd", "lars"):
        return {"momentum": 0.9}
    if cfg.optimizer in ("adam", "adamw") and next(model.parameters()).device.type in ("cpu", "cuda"):
        return {"fused": True}
    return {}


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """timm's factory: biases and norm parameters get no weight decay (and no LARS adaptation)."""
    return timm.optim.create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                          **optimizer_kwargs(model, cfg))


def _autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


def _prepare_out(cfg: RunConfig) -> Path:
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    ckpt = out / runs.CHECKPOINT
    if cfg.resume and not ckpt.is_file():
        if not out.is_dir():
            raise FileNotFoundError(f"--resume: no run folder {out}; --out names the run to continue")
        snaps = sorted(out.glob(f"{ckpt.stem}-*{ckpt.suffix}"))
        if snaps:
            why = f"copy its newest step snapshot, {snaps[-1].name}, to {runs.CHECKPOINT} to resume from it"
        elif (out / "transfer_settings.json").is_file():
            why = f"it is a transfer folder, whose pretraining run is {out / 'pretrain'}"
        elif (out / "metrics.json").is_file():
            why = "it holds finished results whose checkpoint is gone, so there is nothing to resume; train again "\
                  "into a new --out"
        else:
            why = ("the run stopped before its first checkpoint, so there is nothing to resume; run the same "
                   "command without --resume to start it again")
        raise FileNotFoundError(f"--resume: {out} holds no {runs.CHECKPOINT}: {why}")
    if not cfg.resume and ckpt.is_file():
        raise FileExistsError(f"{out} already holds a checkpoint. Pass --resume to continue that run, or choose "
                              "another --out")
    if not cfg.resume and (out / "metrics.json").is_file():
        raise FileExistsError(f"{out} already holds results (metrics.json) and no checkpoint to continue; choose "
                              "another --out")
    return out


def pretrain(cfg: RunConfig | None = None, **overrides) -> dict:
    """Pretrain ``cfg.backbone`` with ``cfg.method`` on ``cfg.data``; then (``cfg.probe``) linear-probe it and its
    random initialisation. The Python twin of ``vissl-lite pretrain``.

    Returns:
        the metrics dict also written to ``<out>/metrics.json``.
    """
    if cfg is None:
        cfg = make_config(**overrides)
    else:  # a copy: the caller's config keeps its own out (e.g. "" for a new dated folder on every call)
        cfg = config_from_dict(cfg.to_dict() | overrides)
    if cfg.method == "classifier":
        raise ConfigError("method 'classifier' is what fine-tuning trains: use 'vissl-lite finetune' (its recipe is "
                          "'finetune'); pretraining takes --method simclr, mae or dae")
    t_start = time.time()
    device = dist.setup(runs.resolve_device(cfg.device))  # under torchrun on GPUs: this rank's cuda:LOCAL_RANK
    out = _prepare_out(cfg)
    cfg.out = str(out)
    cfg.data = absolute_spec(cfg.data)  # config.yaml then finds the data from any working folder
    cfg.init_weights = _absolute_path(cfg.init_weights)
    main = dist.is_main()

    # ---- data: decoded once, kept on the device (or streamed for large folders)
    torch.manual_seed(cfg.seed)
    train_set = load_split(cfg.data, "train", cfg.image_size, cfg.in_chans, cfg.val_fraction, cfg.data_mode,
                           cfg.memory_limit_gb, cfg.progress and main, cfg.on_bad_file, cfg.window)
    if train_set.skipped and main:
        print(f"  note: skipped {len(train_set.skipped)} unreadable train file(s), e.g. {train_set.skipped[0]}")
    # resolved on the training files (array formats hold 8-bit images and are never windowed)
    window = train_set.window if cfg.window == "dataset" and isinstance(train_set.window, tuple) else None
    for note in (train_set.layout and f"note: {train_set.layout}", channel_note(train_set, cfg.data),
                 train_set.window_note, train_set.stream_note and f"note: {train_set.stream_note}",
                 cfg.augment == "pathology" and train_set.channels == 1 and
                 "note: the pathology preset's stain jitter needs colour (H&E); on this 1-channel data it is off",
                 window and f"note: --window dataset maps {window[0]:g} to {window[1]:g} to 0-255 (0.5-99.5 "
                            "percentiles of the training files); evaluation and fine-tuning reuse it"):
        if main and note:
            print("  " + note)
    channels = train_set.channels
    loader = make_loader(train_set, cfg.batch_size, device, shuffle=True, drop_last=True, seed=cfg.seed,
                         num_workers=cfg.num_workers, rank=dist.rank(), world_size=dist.world_size())
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:  # the schedule spans the steps that will actually run
        total = min(total, cfg.max_steps) if total else cfg.max_steps
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total)

    # ---- model, augmentation, optimiser
    model = runs.to_channels_last(runs.build_model(cfg, channels).to(device))
    runs.check_fits(model, channels, cfg.image_size)  # a clear error now, not a traceback at the first step
    per_process_bn = False
    if dist.is_distributed() and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        if device.type == "cuda":  # statistics over the global batch, so N processes x B train like one x N*B
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            per_process_bn = True  # torch's SyncBatchNorm runs on GPUs only
    aug = build_augment(cfg.augment, cfg.image_size, channels, cfg.mean, cfg.std,
                        views=model.views, **cfg.augment_args).to(device)
    start_weights = None
    if cfg.init_weights and not cfg.resume:  # continued SSL from e.g. ImageNet weights (a resume has its own)
        from vissl_lite.backbones import describe_load, load_weights_file

        start_weights = load_weights_file(model.backbone, str(Path(cfg.init_weights).expanduser()))
        if main:
            print("  " + describe_load(start_weights))
    optimizer = build_optimizer(model, cfg)
    runs.seed_rank(cfg.seed, dist.rank())  # each process its own crops, masks and noise
    step, scaler_state, meta = 0, None, {"resumes": [], "train_seconds": 0.0, "train_images": len(train_set)}
    if window:  # every later use of the run reads it from the checkpoint (runs.saved_config)
        meta["window"] = [float(v) for v in window]
    if cfg.resume:
        ckpt = runs.load_checkpoint(out)  # on CPU: RNG states must stay there; the optimizer moves its own state
        saved_world = ckpt.get("world_size")  # absent in checkpoints of older versions
        if saved_world and saved_world != dist.world_size():
            raise runs.CheckpointError(
                f"{out} was trained by {saved_world} process{'es' if saved_world > 1 else ''} (global batch "
                f"{saved_world} x {ckpt['config']['batch_size']}) and this is {dist.world_size()}; another count would "
                f"change the global batch, the epoch length and the schedule. Resume it as it ran: "
                + _resume_command(out, saved_world))
        changed = _check_resume(cfg, ckpt["config"])
        cfg.init_weights = _absolute_path(ckpt["config"].get("init_weights"))  # what the run started from
        if ckpt.get("train_images", len(train_set)) != len(train_set):  # same path, other contents
            raise ConfigError(
                f"--resume: the training data changed since the checkpoint ({cfg.data}: {ckpt['train_images']} "
                f"training images then, {len(train_set)} now). The run's epochs, schedule and sampling order depend "
                "on them; put the data back as it was, or start a new --out")
        meta["resumes"] = ckpt.get("resumes", []) + [{"step": ckpt["step"], "changed": changed}]
        meta["train_seconds"] = ckpt.get("train_seconds", 0.0)
        if runs.legacy_projector(cfg, ckpt["model"]):
            raise runs.CheckpointError(f"{out} was written by an older vissl-lite whose SimCLR head had no output "
                                       "BatchNorm; resume it with --method-args proj_out_bn=false")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, scaler_state = ckpt["step"], ckpt.get("scaler")
        states = ckpt.get("rng_ranks") or [ckpt["rng"]]
        runs.set_rng_state(states[min(dist.rank(), len(states) - 1)])
        if dist.rank() >= len(states):  # a checkpoint without each process's state: a fresh stream per rank
            runs.seed_rank(cfg.seed + ckpt["step"], dist.rank())
        _truncate_log(out / "metrics.jsonl", step)
    train_model = model
    if dist.is_distributed():
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None)

    if main:
        out.mkdir(parents=True, exist_ok=True)
        stale = runs.remove_stale_temporaries(out)
        save_config(cfg, out / "config.yaml")
        print(f"vissl-lite pretrain: {cfg.method} on {train_set.name} ({len(train_set)} images, {channels}ch, "
              f"{cfg.image_size}px) with {cfg.backbone}, {_steps(total)} of {cfg.batch_size} on {device}"
              f"{' x' + str(dist.world_size()) if dist.world_size() > 1 else ''} -> {out}")
        if cfg.resume and step >= total:
            print(f"  resumed: the checkpoint is already at step {step} of {total}; nothing left to train"
                  f"{', evaluating' if cfg.probe else ''}")
        elif cfg.resume:
            print(f"  resuming from step {step} of {total} ({out / runs.CHECKPOINT})")
        asked = round(cfg.warmup_epochs * steps_per_epoch)
        if total and asked >= total:  # warm-up is cut to the run: the ramp ends at --lr on the last step
            print(f"  note: --warmup-epochs {cfg.warmup_epochs:g} is {_steps(asked)} here, "
                  f"{'longer than' if asked > total else 'as long as'} the run ({_steps(total)}), so warm-up takes "
                  f"the whole run: the learning rate ramps up to --lr {cfg.lr:g} at its last step and never decays; "
                  "lower --warmup-epochs for a cosine decay")
        if stale:
            print(f"  removed {len(stale)} partial checkpoint file(s) left by a process killed while saving")
        if per_process_bn:
            print(f"  note: on CPU each of the {dist.world_size()} processes normalises BatchNorm over its own batch "
                  f"of {cfg.batch_size} (torch's SyncBatchNorm runs on GPUs only); on GPUs the statistics span the "
                  "global batch")
        if cfg.resume and meta["resumes"][-1]["changed"]:
            now = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in meta["resumes"][-1]["changed"].items())
            print(f"  note: resuming with changed settings: {now}. Steps up to {step} ran with the old values; "
                  "config.yaml now holds the new ones and metrics.json lists each change (train.resumed)")
    log_path = out / "metrics.jsonl"
    if main and not cfg.resume and log_path.exists():
        log_path.unlink()  # left by an earlier attempt that died before its first checkpoint
    eval_splits, skip_reason = None, None
    if (cfg.probe or cfg.knn_every) and main:  # find out before training whether the evaluations can run
        from vissl_lite.eval.probe import load_eval_splits

        try:
            eval_splits = load_eval_splits(cfg, channels, train=train_set)
        except (ValueError, DataError) as e:
            skip_reason = f"evaluation skipped: {e}"
            print(f"  note: {skip_reason}")
    monitor = None
    if cfg.knn_every and main:
        if skip_reason:
            print("  note: --knn-every is off: the run has no labeled splits it can score (the note above says why)")
        elif eval_splits["train"].multilabel:
            print("  note: --knn-every is off: kNN classifies single-label data and these labels are multi-label "
                  "(the probe reports mean AUROC and mAP)")
        else:
            monitor = _KnnMonitor(cfg, eval_splits, device)

    # ---- the loop
    hooks = []
    if monitor is not None:
        every = cfg.knn_every * steps_per_epoch
        # every N epochs, and at the last step (a run shorter than N epochs still gets its value)
        hooks.append(lambda step, last: {"knn_top1": monitor(model)} if step % every == 0 or last else None)
    t_train, start_step = time.time(), step
    step = run_loop(train_model, model, loader, aug, optimizer, StepSchedule(optimizer, total, warmup, cfg), cfg,
                    step, total, steps_per_epoch, out, hooks, desc="pretrain", checkpoint=True,
                    scaler_state=scaler_state, meta=meta)
    train_s = time.time() - t_train

    summary_ = _train_summary(log_path, step, steps_per_epoch, meta["train_seconds"] + train_s, len(train_set))
    summary_ |= {"processes": dist.world_size(), "global_batch": cfg.batch_size * dist.world_size()}
    summary_["data_mode"] = train_set.data_mode
    if meta["resumes"]:  # each resume: the step it continued from and the settings it changed
        summary_["resumed"] = meta["resumes"]
    metrics = {"command": "pretrain", "config": cfg.to_dict(), "environment": runs.environment(),
               "train": summary_,
               "skipped_files": skipped_files(eval_splits or {"train": train_set})}
    if window:
        metrics["window"] = list(window)
    if start_weights:
        metrics["init_weights"] = start_weights
    if main:
        plot_curves(log_path, out / "train_curves.png")
        if hasattr(model, "reconstruct"):
            from vissl_lite.eval.reconstruct import sample_images, save_reconstruction_grid

            images, _ = sample_images(cfg, channels, 8)
            metrics["reconstructions"] = str(save_reconstruction_grid(model, images, cfg, out / "reconstructions.png"))
    # ---- evaluation
    features: dict = {}
    if cfg.probe and eval_splits is not None:
        from vissl_lite.eval.probe import run_evaluations

        t_probe = time.time()
        try:
            metrics["eval"] = run_evaluations(model, cfg, device, baseline=True, splits=eval_splits,
                                              features=features)
        except KeyboardInterrupt:  # training is saved; only the probes are lost
            if not main:
                raise
            raise TrainingInterrupted(
                f"SIGINT during evaluation: training finished and {out / runs.CHECKPOINT} holds step {step}; "
                f"evaluate with {_resume_command(out)} (it only runs the probes) or "
                f"'vissl-lite linear-probe --checkpoint {out}'", signal.SIGINT) from None
        metrics["class_names"] = eval_splits["train"].class_names
        metrics["timing"] = {"probe_s": round(time.time() - t_probe, 1)}
    elif cfg.probe and skip_reason:
        metrics["eval"] = {"skipped": f"{skip_reason}. Evaluate later with 'vissl-lite linear-probe --checkpoint "
                                      f"{out} --data LABELED_DATA'"}
    metrics.setdefault("timing", {}).update(pretrain_s=round(train_s, 1), total_s=round(time.time() - t_start, 1))
    if main:
        from vissl_lite.eval.probe import summary, write_metrics

        write_metrics(out, metrics)
        from vissl_lite.eval.report import write_report

        report = write_report(out, metrics, features, train_curves=out / "train_curves.png")
        tr = metrics["train"]
        done = _steps(step) + (f" ({step - start_step} after resuming)" if start_step else "")
        print(f"\nDone in {metrics['timing']['total_s']:.0f}s: {done}, final loss {tr['final_loss']}, "
              f"{tr['images_per_s']:.0f} images/s (mean of {tr['images_per_s_from']}). Run folder: {out}")
        if "eval" in metrics and "skipped" not in metrics["eval"]:
            print(summary(metrics))
        elif "eval" in metrics:
            print("  " + metrics["eval"]["skipped"])
        print(f"  report: {report}")
    dist.cleanup()
    return metrics


def _steps(n: int) -> str:
    return f"{n} step{'' if n == 1 else 's'}"


class StepSchedule:
    """:func:`lr_at` applied to every parameter group (times its ``lr_scale``, as timm's schedulers do), with the
    ``step_update(step)`` interface of timm's schedulers so the loop drives both alike."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int, cfg: RunConfig):
        self.optimizer, self.total, self.warmup, self.lr, self.min_lr = optimizer, total, warmup, cfg.lr, cfg.min_lr

    def step_update(self, num_updates: int) -> None:
        lr = lr_at(num_updates, self.total, self.warmup, self.lr, self.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def run_loop(train_model: nn.Module, model: nn.Module, loader, aug: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler, cfg: RunConfig, step: int, total: int, steps_per_epoch: int, out: Path,
             hooks: list = (), desc: str = "train", checkpoint: bool = True, scaler_state: dict | None = None,
             meta: dict | None = None) -> int:
    """The one training loop (pretraining and fine-tuning): from ``step`` to ``total``, logging to
    ``<out>/metrics.jsonl`` and (``checkpoint``) saving ``<out>/checkpoint.pt`` every ``cfg.checkpoint_every`` steps
    and at the end.

    Args:
        train_model: what the forward runs (the DDP wrapper when distributed); ``model`` is what gets saved.
        scheduler: anything with ``step_update(step)`` that sets the optimizer's learning rates (timm's schedulers,
            :class:`StepSchedule`).
        hooks: ``hook(step, is_last) -> dict | None`` after each step; a returned dict is logged with the step.
        scaler_state: the fp16 loss scaler's state from the checkpoint being resumed.
        meta: extra checkpoint entries, saved with every checkpoint (pretraining: the resolved ``--window
            dataset`` range, the resume history, and ``train_seconds``, the time of earlier segments, which is
            saved as the training time up to that step).

    Returns:
        the step reached.
    """
    main = dist.is_main()
    device = next(model.parameters()).device
    amp_dtype = _autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if scaler_state and scaler.is_enabled():
        scaler.load_state_dict(scaler_state)
    if cfg.compile:
        # in place: __call__ is compiled, the parameters and state-dict keys stay the model's own, so
        # checkpoints, resume and export do not change; the first step compiles. Evaluation goes through
        # model.embed / model.logits, which stay eager
        train_model.compile()
        if main:
            print(f"  {desc}: --compile on; the first step compiles the model and takes longer")
    log_path = out / "metrics.jsonl"
    model.train()
    bad_loss = torch.zeros((), dtype=torch.bool, device=device)
    channels_last = runs.use_channels_last(model)
    bar = tqdm(total=total, initial=step, desc=desc, disable=not (cfg.progress and main), dynamic_ncols=True,
               leave=desc == "pretrain")
    t_log, seen, last_good = time.time(), 0, step
    sums: dict[str, torch.Tensor] = {}  # each output summed on the device since the last log line
    n_summed = 0
    t_loop, before = t_log, (meta or {}).get("train_seconds", 0.0)

    def saved_meta() -> dict | None:
        return None if meta is None else meta | {"train_seconds": round(before + time.time() - t_loop, 1)}

    epoch = step // steps_per_epoch
    stop: dict = {}
    try:
        with _stop_requests() as stop, runs.keep_freed_memory(device):
            while step < total:
                loader.set_epoch(epoch, start=step - epoch * steps_per_epoch)
                for x, y in loader:
                    scheduler.step_update(step)
                    lr = max(group["lr"] for group in optimizer.param_groups)
                    views = aug(x)  # list of (B, C, S, S) float
                    if channels_last:
                        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        outputs = train_model(views, y)
                    loss = outputs["loss"]
                    bad_loss |= ~torch.isfinite(loss.detach())
                    for k, v in outputs.items():  # no host sync: read at log steps only
                        v = v.detach().float()
                        sums[k] = sums[k] + v if k in sums else v
                    n_summed += 1
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                        if amp_dtype != torch.float16:  # fp16's scaler skips non-finite steps by design
                            bad_loss |= ~torch.isfinite(grad_norm)  # a NaN gradient would poison the weights
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    seen += x.shape[0] * dist.world_size()
                    bar.update(1)
                    is_last = step >= total
                    if step % cfg.log_every == 0 or is_last:
                        _check_finite(bad_loss, last_good, step, out, checkpoint)
                        now = time.time()
                        record = {"step": step, "epoch": round(step / steps_per_epoch, 3), "lr": lr,
                                  # the mean over the steps since the last line: one batch's value is noise
                                  **{k: round(float(v) / n_summed, 5) for k, v in sums.items()},
                                  "images_per_s": round(seen / max(now - t_log, 1e-9), 1)}
                        t_log, seen, sums, n_summed = now, 0, {}, 0
                        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                        if main:
                            _append(log_path, record)
                    t_hooks = time.time()
                    for hook in hooks:
                        extra = hook(step, is_last)
                        if extra and main:
                            _append(log_path, {"step": step, "epoch": round(step / steps_per_epoch, 3), **extra})
                    t_log += time.time() - t_hooks  # a monitor's time is not training throughput
                    if checkpoint and (step % cfg.checkpoint_every == 0 or is_last):
                        bad_loss |= _nonfinite_weights(model)  # an update can overflow with a finite loss
                        _check_finite(bad_loss, last_good, step, out, checkpoint)
                        rngs = runs.rng_states_of_every_rank()  # every rank, before rank 0 saves
                        if main:
                            runs.save_checkpoint(out / runs.CHECKPOINT, model, optimizer, step, cfg,
                                                 cfg.keep_checkpoints, scaler, saved_meta(), rngs)
                        last_good = step
                    if _stop_requested(stop, step, cfg.log_every):
                        _stop(stop["signum"], step, last_good, checkpoint, main, model, optimizer, cfg, out, bad_loss,
                              scaler, saved_meta())
                    if is_last:
                        break
                epoch += 1
            _check_finite(bad_loss, last_good, step, out, checkpoint)
            if stop["signum"] is not None:  # arrived during the last step: training is done and saved; stop here
                _stop(stop["signum"], step, last_good, checkpoint, main, model, optimizer, cfg, out, bad_loss, scaler,
                      saved_meta())
    except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM) mid-step: no checkpoint now; say what there is
        signum = stop.get("second")
        if not signum:  # not raised by our handler (e.g. an interrupt off the main thread's handler)
            raise
        name = signal.Signals(signum).name
        if not checkpoint:
            raise TrainingInterrupted(f"second {name} at step {step}: stopped at once", signum) from None
        saved = (f"{out / runs.CHECKPOINT} holds step {last_good}; continue with {_resume_command(out)}"
                 if (out / runs.CHECKPOINT).is_file() else "no checkpoint had been written yet")
        raise TrainingInterrupted(f"second {name} at step {step}: stopped at once without saving; {saved}",
                                  signum) from None
    bar.close()
    return step


def _stop_requested(stop: dict, step: int, log_every: int) -> bool:
    """Whether to stop after this step. Across processes the ranks agree (MAX over their flags) at log steps, so
    every rank stops on the same step instead of one waiting forever in the next all-reduce."""
    if not dist.is_distributed():
        return stop["signum"] is not None
    if step % log_every:
        return False
    import torch.distributed as tdist

    device = torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([stop["signum"] or 0], device=device)
    tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
    stop["signum"] = int(flag.item()) or None
    return stop["signum"] is not None


def _append(log_path: Path, record: dict) -> None:
    with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _stop(signum: int, step: int, last_good: int, checkpoint: bool, main: bool, model, optimizer, cfg: RunConfig,
          out: Path, bad_loss: torch.Tensor, scaler: torch.amp.GradScaler, meta=None) -> None:
    name = signal.Signals(signum).name
    if not checkpoint:
        raise TrainingInterrupted(f"{name} at step {step}: stopped; this run keeps no checkpoint of its own",
                                  signum)
    if checkpoint:
        bad_loss |= _nonfinite_weights(model)
    _check_finite(bad_loss, last_good, step, out, checkpoint)
    if last_good != step:
        rngs = runs.rng_states_of_every_rank()  # every rank takes part
        if main:
            runs.save_checkpoint(out / runs.CHECKPOINT, model, optimizer, step, cfg, cfg.keep_checkpoints, scaler,
                                 meta, rngs)
    raise TrainingInterrupted(f"{name} at step {step}: wrote {out / runs.CHECKPOINT}; continue with "
                              + _resume_command(out), signum)


def _resume_command(out: Path, processes: int | None = None) -> str:
    """How to continue the run in ``out``: the same launch, torchrun with the same process count when it had
    several (on several nodes, torchrun's LOCAL_WORLD_SIZE gives the processes per node)."""
    n = dist.world_size() if processes is None else processes
    command = f"vissl-lite pretrain --out {out} --resume"
    if n == 1:
        return f"'{command}'"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", n)) if n == dist.world_size() else n
    if 0 < local < n and n % local == 0:  # this launch spans n / local nodes
        return (f"'torchrun --nnodes={n // local} --nproc_per_node={local} <your rendezvous options> -m "
                f"vissl_lite.cli pretrain --out {out} --resume' on each of the {n // local} nodes ({n} processes in "
                "all)")
    more = "" if processes is None else "; on several nodes, as many nodes and processes per node as it had"
    return (f"'torchrun --nproc_per_node={n} -m vissl_lite.cli pretrain --out {out} --resume' ({n} processes in "
            f"all{more})")


class _KnnMonitor:
    """kNN top-1 on the val split with the train split as the bank, through the eval view. It draws no random
    numbers, so monitoring does not change the training run (or its exact resume)."""

    def __init__(self, cfg: RunConfig, eval_splits: dict, device: torch.device):
        self.cfg = config_from_dict(cfg.to_dict() | {"progress": False})  # no bars inside the training bar
        self.device = device
        self.splits = {"train": eval_splits["train"], "val": eval_splits["val"]}

    def __call__(self, model: nn.Module) -> float:
        from vissl_lite.eval.knn import knn_eval
        from vissl_lite.eval.probe import backbone_features

        model.eval()
        cfg = self.cfg
        cached = backbone_features(model.embed, self.splits, cfg, self.device, "knn")
        model.train()
        k = cfg.knn_k[0]
        return round(knn_eval(cached["train"], cached["val"], self.splits["train"].num_classes, [k],
                              cfg.knn_temperature)["top1"][k], 3)


def _nonfinite_weights(model: nn.Module) -> torch.Tensor:
    """Whether any floating-point weight or buffer (BatchNorm statistics) of ``model`` is NaN or infinite: checked
    before every checkpoint, so that a checkpoint on disk is always one a resume can train from."""
    tensors = [t.detach() for t in model.state_dict().values() if t.is_floating_point()]
    return ~torch.stack([torch.isfinite(t).all() for t in tensors]).all() if tensors else torch.tensor(False)


def _check_finite(bad_loss: torch.Tensor, last_good: int, step: int, out: Path, checkpoint: bool = True) -> None:
    if bool(bad_loss):  # host sync, only at log/checkpoint steps
        where = f"the last good checkpoint is {out / runs.CHECKPOINT} (step {last_good})" if last_good else \
            "no checkpoint was written yet"
        if not checkpoint:
            where = "nothing was saved from this run"
        raise NonFiniteLossError(
            f"the loss, its gradient or the weights became NaN or infinite between steps {last_good} and {step}; "
            "stopped, "
            f"{where}. "
            "Try a lower --lr, --clip-grad 1.0, a longer --warmup-epochs, or --amp off.")


def _check_resume(cfg: RunConfig, saved: dict) -> dict:
    """A ConfigError when ``cfg`` differs from the checkpoint's config in an identity key; else the schedule keys
    it changes, ``{key: [checkpoint's value, new value]}``."""
    current = cfg.to_dict()
    saved = saved | {"data": absolute_spec(saved["data"])} if "data" in saved else saved  # one spelling per path
    then_w, now_w = _absolute_path(saved.get("init_weights")), _absolute_path(current.get("init_weights"))
    if now_w and now_w != then_w:  # a resume continues from the checkpoint: other start weights would be ignored unsaid
        raise ConfigError(f"--resume --init-weights {now_w}: {cfg.out} started from "
                          f"{then_w or 'random initialisation'}, and a resume continues from its checkpoint without "
                          "loading weights again; leave --init-weights out (the run's own is kept), or start a new "
                          "--out to start from other weights")
    differ = [k for k in IDENTITY_KEYS if k in saved and current.get(k) != saved.get(k)]
    if differ:
        detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in differ)
        raise ConfigError(f"--resume with settings that differ from the checkpoint ({detail}). Resume with the "
                          "run's own config (vissl-lite pretrain --out RUN --resume) or start a new --out")
    return {k: [saved[k], current.get(k)] for k in SCHEDULE_KEYS if k in saved and current.get(k) != saved[k]}


def _absolute_path(path: str | None) -> str:
    """A file path made absolute (''/None stay ''), so config.yaml finds it from any working folder."""
    return os.path.abspath(Path(path).expanduser()) if path else ""


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from; they will be logged again."""
    if log_path.is_file() and dist.is_main():
        keep = []
        for line in log_path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError):  # a line cut short by a kill
                continue
        atomic_write_text(log_path, "".join(line + "\n" for line in keep))


def _train_summary(log_path: Path, steps: int, steps_per_epoch: int, seconds: float, n_images: int) -> dict:
    records = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    records = [r for r in records if "loss" in r]  # training lines, not monitor lines
    last = records[-1] if records else {}
    # the first interval holds the warm-up (allocator, kernel choice, loader start): the headline leaves it out
    rates = [r["images_per_s"] for r in records[1:]] or [r["images_per_s"] for r in records]
    return {"steps": steps, "epochs": round(steps / steps_per_epoch, 2), "train_images": n_images,
            "final_loss": last.get("loss"), "seconds": round(seconds, 1),
            "images_per_s": round(sum(rates) / len(rates), 1) if rates else 0.0,
            "images_per_s_from": "the log intervals after the first, which holds the warm-up" if len(records) > 1
            else "the only log interval, warm-up included"}


def plot_curves(log_path: Path, png: Path) -> None:
    """Loss, learning rate and any other logged scalar against the step, one panel each."""
    if not log_path.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    keys = ["loss", "lr"]
    for r in records:  # method scalars and monitor lines (e.g. knn_top1) may appear on some lines only
        keys += [k for k in r if k not in keys and k not in ("step", "epoch", "images_per_s")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points), marker="o" if len(points) < 30 else None)
        ax.set_title(key + (" (val, %)" if key == "knn_top1" else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
