"""``vissl-lite pretrain``: load the data, build the model, resume or start a run folder, run the training loop,
then the probes and the report.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import torch
from torch import nn

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
from vissl_lite.data.datasets import SPLIT_RULE, absolute_spec, arrays_carve_test
from vissl_lite.train import (
    StepSchedule,
    TrainingInterrupted,
    _resume_command,
    build_optimizer,
    plot_curves,
    run_loop,
)

# Keys that define what a checkpoint is; a resumed run must agree with them.
IDENTITY_KEYS = ("method", "method_args", "backbone", "small_input", "patch_size", "data", "image_size", "in_chans",
                 "window", "val_fraction", "batch_size", "optimizer", "seed", "augment", "augment_args", "mean", "std")
# Keys a resume may change (e.g. a lower lr after a NaN, more steps, a kNN monitor switched on): allowed, printed,
# and recorded in the checkpoint and metrics.json, since config.yaml then holds only the latest values.
SCHEDULE_KEYS = ("epochs", "max_steps", "lr", "min_lr", "weight_decay", "warmup_epochs", "clip_grad", "amp",
                 "knn_every")


def default_out(cfg: RunConfig) -> Path:
    """runs/<method>-<data>-<time>, with -2, -3, ... when a run started in the same second has it."""
    base = Path("runs") / f"{cfg.method}-{data_name(cfg.data)}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


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
    if main and cfg.data == "shapes" and cfg.image_size > 64:  # said before the wait, not after it
        print(f"  note: no --data, so the built-in shapes set is drawn at {cfg.image_size} px, which takes minutes "
              "on a CPU; it is a smoke test at this size: pass --data with your own images")
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
    step, scaler_state, meta = 0, None, {"resumes": [], "train_seconds": 0.0, "train_images": len(train_set),
                                         "split_rule": SPLIT_RULE}
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
        if ckpt.get("split_rule", 1) < SPLIT_RULE and arrays_carve_test(cfg.data):
            raise runs.CheckpointError(
                f"{out} was started by an older vissl-lite, which carved no test split from {cfg.data} (it has no "
                "test arrays); this version carves one from train, so the run would continue on other images. "
                "Start a new --out")
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
