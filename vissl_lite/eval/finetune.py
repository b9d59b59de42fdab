"""Fine-tuning: the whole network plus a linear head, trained through the same loop as pretraining (the
``classifier`` method), from an SSL checkpoint, from scratch or from a local timm weights file.

Protocol: timm's AdamW (biases and norms without weight decay; layer-wise lr decay for ViTs), warmup + cosine from
timm's scheduler, label smoothing, optional mixup/cutmix (timm), drop path. The validation split is scored at up to
25 evenly spaced points; the weights with the best validation score are kept and reported once on test. Each
(init, label regime, seed) is its own sub-run in ``<out>/<init>/<regime>/seed<k>/``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

from vissl_lite import runs
from vissl_lite.augment import PRESETS, EvalView, build_augment
from vissl_lite.backbones import describe_load, in_chans_of, is_vit, load_weights_file
from vissl_lite.config import (
    RUN_ONLY,
    ConfigError,
    RunConfig,
    atomic_write_text,
    config_from_dict,
    load_recipe,
    merge_overrides,
    parse_value,
    validate,
)
from vissl_lite.data import ImageSet, label_subset, make_loader
from vissl_lite.data.datasets import absolute_spec, data_signature
from vissl_lite.eval.features import extract_features
from vissl_lite.eval.metrics import logits_report, selection_score
from vissl_lite.eval.probe import (
    aggregate_seeds,
    label_regimes,
    load_eval_splits,
    regime_name,
    row_line,
    short_class_note,
    table_rows,
    write_metrics,
)
from vissl_lite.train import TrainingInterrupted, optimizer_kwargs, plot_curves, run_loop

INITS = ("checkpoint", "scratch", "weights")
# What a checkpoint fixes: the architecture, its input, and (unless --data says otherwise) the data.
ARCH_KEYS = ("backbone", "small_input", "patch_size", "image_size", "in_chans", "mean", "std")
DATA_KEYS = ("data", "data_mode", "memory_limit_gb", "val_fraction", "window")
MAX_VAL_POINTS = 25


def finetune_config(checkpoint: str | Path | None = None, recipe: str = "finetune", **overrides) -> RunConfig:
    """The recipe, then (with a checkpoint) the run's architecture and data, then ``overrides``."""
    values = load_recipe(recipe)
    if checkpoint is not None:
        ckpt = runs.load_checkpoint(checkpoint)
        saved = runs.saved_config(ckpt)
        runs.check_split_fraction(checkpoint, saved, overrides.get("data"), overrides.get("val_fraction"))
        runs.check_split_rule(checkpoint, ckpt, overrides.get("data"))
        # in_chans 0 means 'the data's own' when pretraining; the checkpoint's first convolution says which
        arch = saved | {"in_chans": runs.checkpoint_in_chans(ckpt, checkpoint)}
        clash = [k for k in ARCH_KEYS if k in overrides and parse_value(k, overrides[k]) != arch[k]]
        if clash:
            fixed = ", ".join(f"{k}={arch[k]!r}" for k in clash)
            raise ConfigError(f"{', '.join(clash)} {'comes' if len(clash) == 1 else 'come'} from the checkpoint "
                              f"({fixed}); drop the flag, or "
                              "fine-tune from scratch (--init scratch without --checkpoint)")
        if "window" in overrides:  # the backbone learned the data as mapped by its window: one mapping per run
            runs.check_window(checkpoint, ckpt, overrides["window"], "fine-tuning maps",
                              "fine-tune from scratch, --init scratch without --checkpoint, with the window you want")
            overrides = {k: v for k, v in overrides.items() if k != "window"}  # 'dataset': the run's resolved pair
        values |= {k: saved[k] for k in ARCH_KEYS + DATA_KEYS if k in saved}  # older runs lack newer keys
        if saved.get("augment") in PRESETS and "augment" not in overrides:
            # the medical preset's choices (e.g. no left-right flips of a chest film) hold for fine-tuning too;
            # its own defaults, not the pretraining run's arguments (those were tuned for two SSL views)
            overrides = {"augment": saved["augment"]} | overrides
    values = merge_overrides(values, overrides)
    if values.get("method") != "classifier":
        given = "method" in overrides
        raise ConfigError(f"fine-tuning trains the 'classifier' method, not '{values.get('method')}'"
                          + ("; drop --method" if given else f" (from --config {recipe}, a pretraining recipe); use "
                             "a fine-tuning recipe (the default, 'finetune') or none"))
    return validate(RunConfig(**{k: parse_value(k, v) for k, v in values.items()}))


def resolved_layer_decay(cfg: RunConfig, backbone: nn.Module) -> float:
    """``cfg.layer_decay``, or 0.75 for ViTs (MAE's ViT-B value) and 1.0 (off) for other backbones."""
    if cfg.layer_decay is not None:
        return cfg.layer_decay
    return 0.75 if is_vit(backbone) else 1.0


VIT_STEM = ("cls_token", "reg_token", "dist_token", "pos_embed", "patch_embed", "norm_pre")


def vit_layer_ids(backbone: nn.Module) -> dict[str, int]:
    """MAE's layer ids for a ViT's parameters: 0 for the stem (tokens, position embedding, patch embedding), i + 1
    for block i, and depth + 1, the head's layer, for everything after the blocks (``norm``, ``fc_norm``,
    ``attn_pool``). timm's grouping differs after the blocks: it puts ``norm`` with the last block and any other
    trailing module in a layer of its own, which would shift every block's scale by one factor for pooled ViTs."""
    depth = len(backbone.blocks)
    ids = {}
    for name, _ in backbone.named_parameters():
        top = name.split(".")[0]
        ids[name] = int(name.split(".")[1]) + 1 if top == "blocks" else 0 if top in VIT_STEM else depth + 1
    return ids


def build_optimizer(model: nn.Module, cfg: RunConfig, layer_decay: float) -> torch.optim.Optimizer:
    """timm's optimizer; biases and norms get no weight decay. With layer decay (< 1), a ViT's parameter in layer
    ``i`` of :func:`vit_layer_ids` trains at ``decay ** (depth + 1 - i)`` times the rate, as in MAE's fine-tuning:
    the head and the final norm at the full rate, the last block at ``decay``, the patch embedding at
    ``decay ** (depth + 1)``. Other backbones use timm's layer grouping, shifted so that its top layer also runs at
    ``decay`` and the head alone at the full rate."""
    kwargs = optimizer_kwargs(model, cfg)
    if layer_decay >= 1.0:
        return create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)
    backbone = model.backbone
    skip = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    if is_vit(backbone):
        ids, top = vit_layer_ids(backbone), len(backbone.blocks) + 1
        grouped: dict[tuple[int, bool], list] = {}
        for name, p in backbone.named_parameters():
            if p.requires_grad:
                grouped.setdefault((ids[name], p.ndim <= 1 or name in skip), []).append(p)
        groups = [{"params": ps, "lr_scale": layer_decay ** (top - i), "weight_decay": 0.0 if no_wd else
                   cfg.weight_decay} for (i, no_wd), ps in sorted(grouped.items())]
    else:
        groups = param_groups_layer_decay(backbone, weight_decay=cfg.weight_decay, no_weight_decay_list=skip,
                                          layer_decay=layer_decay)
        for g in groups:
            g["lr_scale"] = g.get("lr_scale", 1.0) * layer_decay
    groups += [{"params": [model.head.weight], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
               {"params": [model.head.bias], "weight_decay": 0.0, "lr_scale": 1.0}]
    return create_optimizer_v2(groups, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


def schedule_lengths(n_batches: int, cfg: RunConfig) -> tuple[int, int]:
    """(total steps, warmup steps): ``epochs`` over the labeled subset but at least ``min_steps``; warmup keeps
    its share of the schedule (warmup_epochs / epochs) when min_steps stretches it."""
    total = max(cfg.epochs * n_batches, cfg.min_steps) or cfg.max_steps  # epochs 0: max_steps alone
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    if total < 1:
        raise ConfigError("fine-tuning would run 0 steps; set --epochs or --min-steps above 0")
    warmup = round(total * cfg.warmup_epochs / cfg.epochs) if cfg.epochs else 0
    return total, min(warmup, total - 1)


@torch.no_grad()
def predict(model: nn.Module, data: ImageSet, cfg: RunConfig, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(logits, labels) over ``data`` through the eval view, model in eval mode."""
    was_training = model.training
    model.eval()
    view = EvalView(cfg.image_size, data.channels, cfg.mean, cfg.std).to(device)
    logits, labels = extract_features(model.logits, data, view, device, progress=False)
    model.train(was_training)
    return logits, labels


def finetune_one(cfg: RunConfig, splits: dict[str, ImageSet], train_idx: np.ndarray | None, init_state: dict | None,
                 out: Path, device: torch.device, save_model: bool = False, desc: str = "finetune",
                 features: list | None = None, source: dict | None = None, data_signature: str | None = None) -> dict:
    """Fine-tune once: ``cfg.seed`` fixes the head, data order and augmentation; ``train_idx`` picks the labeled
    subset (None: all of train). Returns the test result of the weights chosen on validation; ``features``, when
    given, receives the chosen model's (test features, labels) for the embedding plot. ``source`` (what
    ``init_state`` is: a description and its fingerprint) and ``data_signature`` (of the files read) are kept in
    result.json for --resume to compare."""
    out.mkdir(parents=True, exist_ok=True)
    train = splits["train"] if train_idx is None else splits["train"].subset(train_idx)
    channels = train.channels
    mixing = cfg.method_args.get("mixup", 0) or cfg.method_args.get("cutmix", 0)
    batch = min(cfg.batch_size, len(train))
    batch -= batch % 2 if mixing else 0  # timm's batch mixer pairs images
    loader = make_loader(train, batch, device, shuffle=True, drop_last=True, seed=cfg.seed,
                         num_workers=cfg.num_workers)
    total, warmup = schedule_lengths(len(loader), cfg)
    model = runs.build_model(cfg, channels)  # seeded from cfg.seed: the head differs per seed
    if init_state is not None:
        model.backbone.load_state_dict(init_state)
    runs.to_channels_last(model.to(device))
    runs.check_fits(model, channels, cfg.image_size)
    aug = build_augment(cfg.augment, cfg.image_size, channels, cfg.mean, cfg.std,
                        views=model.views, **cfg.augment_args).to(device)
    decay = resolved_layer_decay(cfg, model.backbone)
    optimizer = build_optimizer(model, cfg, decay)
    timm_log = logging.getLogger("timm.scheduler.cosine_lr")
    level = timm_log.level
    timm_log.setLevel(logging.ERROR)  # a one-step cosine phase (warmup as long as the run) is stated in the protocol
    try:
        scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=cfg.min_lr,
                                      warmup_t=warmup, warmup_lr_init=cfg.lr * 1e-3, warmup_prefix=True,
                                      t_in_epochs=False)
    finally:
        timm_log.setLevel(level)
    multilabel = train.multilabel
    key = "val_auroc_mean" if multilabel else "val_top1"
    every = len(loader) * max(1, math.ceil(total / len(loader) / MAX_VAL_POINTS))
    best = {"score": -1.0, "step": 0, "state": None}

    def validate_hook(step: int, is_last: bool) -> dict | None:
        if step % every and not is_last:
            return None
        value = selection_score(*predict(model, splits["val"], cfg, device))
        if value > best["score"]:  # ties keep the earlier weights
            best.update(score=value, step=step, state=copy.deepcopy({k: v.cpu() for k, v in
                                                                     model.state_dict().items()}))
        return {key: round(value, 3)}

    (out / "metrics.jsonl").unlink(missing_ok=True)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # timm's mixer draws from numpy
    run_loop(model, model, loader, aug, optimizer, scheduler, cfg, 0, total, len(loader), out, [validate_hook],
             desc=desc, checkpoint=False)
    train_s = time.time() - t0
    model.load_state_dict(best["state"])
    num_classes = splits["train"].num_classes
    test_logits, test_labels = predict(model, splits["test"], cfg, device)
    test = logits_report(test_logits, test_labels, num_classes)
    head = {"auroc_mean": test["auroc_mean"], "map": test["map"]} if multilabel else {"top1": test["top1"]}
    result = {**head, "split": "test", key: best["score"], "best_step": best["step"], "steps": total,
              "warmup_steps": warmup, "batch_size": batch, "layer_decay": decay, "lr": cfg.lr, "seed": cfg.seed,
              "n_train": len(train), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
              "metrics": test, "seconds": round(train_s, 1)}
    if features is not None:
        model.eval()
        view = EvalView(cfg.image_size, channels, cfg.mean, cfg.std).to(device)
        features.append(tuple(t.cpu() for t in extract_features(model.embed, splits["test"], view, device,
                                                                progress=False)))
        torch.save({"features": features[-1][0], "labels": features[-1][1]}, out / "test_features.pt")
    if save_model:
        runs.save_checkpoint(out / runs.CHECKPOINT, model, None, best["step"], cfg)
    plot_curves(out / "metrics.jsonl", out / "train_curves.png")
    result["config"] = _identity(cfg)
    result["init_source"] = source
    result["data_signature"] = data_signature
    atomic_write_text(out / "result.json", json.dumps(result, indent=2))
    return result


def _identity(cfg: RunConfig) -> dict:
    """The settings that make a sub-run what it is (what --resume compares)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in RUN_ONLY}


def protocol_text(cfg: RunConfig, decay: float, pooling_note: str = "") -> str:
    margs = cfg.method_args
    mix = (f", mixup {margs.get('mixup', 0)} / cutmix {margs.get('cutmix', 0)}"
           if margs.get("mixup") or margs.get("cutmix") else ", no mixup/cutmix")
    aug_args = f" {cfg.augment_args}" if cfg.augment_args else ""
    if not cfg.epochs:  # max_steps alone: schedule_lengths gives no warmup
        schedule = "cosine (timm), no warmup"
    elif cfg.warmup_epochs < cfg.epochs:
        schedule = f"warmup {cfg.warmup_epochs:g}/{cfg.epochs} of the schedule then cosine (timm)"
    else:
        schedule = "linear warmup over the whole schedule (warmup_epochs >= epochs: no cosine phase)"
    length = f"{cfg.epochs} epochs and at least {cfg.min_steps} steps" if cfg.epochs else "no epoch count"
    if cfg.max_steps:  # schedule_lengths caps the schedule at max_steps
        length += f", at most {cfg.max_steps} steps (--max-steps)"
    return (f"full network + linear head (classifier method), {cfg.augment} augmentation{aug_args}; "
            f"{cfg.optimizer} lr {cfg.lr:g} wd {cfg.weight_decay:g}, {schedule}, {length}, batch "
            f"<= {cfg.batch_size}; layer decay {decay:g}, drop path {cfg.drop_path:g}, label smoothing "
            f"{margs.get('label_smoothing', 0.1):g}{mix}; weights chosen on the best val score of up to "
            f"{MAX_VAL_POINTS} evenly spaced checks; reported once on test{pooling_note}")


def finetune(checkpoint: str | Path | None = None, init: str | None = None, init_weights: str | Path | None = None,
             out: str | Path | None = None, baseline: bool = True, recipe: str = "finetune", **overrides) -> dict:
    """Fine-tune and compare with training from scratch; the Python twin of ``vissl-lite finetune``.

    Args:
        checkpoint: a pretraining run (folder or checkpoint.pt): its backbone initialises the network and its
            config fixes the architecture and (unless ``data`` is given) the data.
        init: 'checkpoint' (default with a checkpoint), 'weights' (default with init_weights) or 'scratch'.
        init_weights: a local timm weights file for init='weights'; given with a checkpoint, the weights are
            fine-tuned as a further comparison.
        out: output folder (default ``<run>/finetune``, or ``runs/finetune-<data>-<time>``).
        baseline: also fine-tune from scratch (random init) with the same settings and seeds.
        **overrides: config keys (data, epochs, lr, label_fraction, seeds, ...).

    Returns:
        the metrics dict written to ``<out>/metrics.json`` (``eval.finetune``, ``eval.finetune_scratch``,
        ``eval.table``); ``<out>/report.md`` shows it.
    """
    t0 = time.time()
    init = init or ("checkpoint" if checkpoint else "weights" if init_weights else "scratch")
    if init not in INITS:
        raise ConfigError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "checkpoint" and checkpoint is None:
        raise ConfigError("--init checkpoint needs --checkpoint RUN (a pretraining run folder)")
    if init == "weights" and not init_weights:
        raise ConfigError("--init weights needs --init-weights FILE (a local timm .safetensors/.pth file)")
    if init_weights and not Path(init_weights).is_file():
        raise FileNotFoundError(f"--init-weights: no file at {init_weights}")
    resume = bool(overrides.pop("resume", False))
    cfg = finetune_config(checkpoint, recipe, **overrides)
    cfg.data = absolute_spec(cfg.data)  # sub-runs resume from any working folder, however --data was spelled
    device = runs.resolve_device(cfg.device)
    if out is None and cfg.out:
        out = cfg.out
    if out is None:
        out = (runs.find_checkpoint(checkpoint).parent / "finetune" if checkpoint else
               Path("runs") / f"finetune-{Path(cfg.data).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    out = Path(out)
    runs.check_out_folder(out, "finetune")
    if (out / "metrics.json").is_file() and not resume:
        raise FileExistsError(f"{out} already holds a fine-tuning result; pass --resume to finish or reuse its "
                              "sub-runs, or choose another --out")

    # ---- initial weights
    init_states: dict[str, dict | None] = {}
    notes = {}
    channels = cfg.in_chans
    if init == "checkpoint":
        _, pretrained, ckpt = runs.load_run(checkpoint)
        channels = in_chans_of(pretrained.backbone)
        init_states["checkpoint"] = {k: v.clone() for k, v in pretrained.backbone.state_dict().items()}
        notes["checkpoint"] = {"path": str(runs.find_checkpoint(checkpoint)), "step": ckpt["step"],
                               "method": ckpt["config"]["method"]}
    splits = load_eval_splits(cfg, channels)
    channels = splits["train"].channels
    if init_weights:
        backbone = runs.build_backbone(cfg, channels)
        notes["weights"] = load_weights_file(backbone, init_weights)
        init_states["weights"] = backbone.state_dict()
    inits = ([init] + (["weights"] if init_weights and init != "weights" else [])  # SSL vs supplied weights too
             + (["scratch"] if baseline and init != "scratch" else []))
    init_states.setdefault("scratch", None)
    # what each sub-run starts from, by content: --resume must not reuse sub-runs of another checkpoint or file
    described = {"checkpoint": notes.get("checkpoint") and f"checkpoint {notes['checkpoint']['path']} at step "
                                                           f"{notes['checkpoint']['step']}",
                 "weights": init_weights and f"weights file {Path(init_weights).resolve()}"}
    sources = {name: {"description": described[name], "fingerprint": runs.state_fingerprint(init_states[name])}
               for name in inits if init_states.get(name) is not None}

    num_classes, multilabel = splits["train"].num_classes, splits["train"].multilabel
    cfg = config_from_dict(cfg.to_dict() | {"in_chans": channels, "out": str(out), "method_args": cfg.method_args |
                                            {"num_classes": num_classes, "multilabel": multilabel}})
    regimes = label_regimes(cfg, splits["train"].labels.numpy())
    data_sig = data_signature(cfg.data)
    n_runs = len(inits) * len(regimes) * cfg.seeds
    print(f"vissl-lite finetune: {cfg.backbone} on {splits['train'].name} ({len(splits['train'])} train / "
          f"{len(splits['val'])} val / {len(splits['test'])} test, {num_classes} "
          f"{'labels' if multilabel else 'classes'}, {channels}ch, {cfg.image_size}px); inits {', '.join(inits)}; "
          f"label regimes "
          f"{', '.join(regime_name(r) for r in regimes)}; {cfg.seeds} seed(s): {n_runs} fine-tuning runs on "
          f"{device} -> {out}")
    if "weights" in notes:
        print("  --init-weights " + describe_load(notes["weights"]))
    if note := short_class_note(regimes, num_classes):
        print(note)
    labels = splits["train"].labels.numpy()
    results: dict[str, dict[str, list[dict]]] = {i: {regime_name(r): [] for r in regimes} for i in inits}
    done, reused = 0, 0
    embeddings: dict = {}
    for name in inits:
        for regime in regimes:
            subset = regime["label_fraction"] < 1.0 or regime["labels_per_class"] > 0
            for s in range(cfg.seeds):
                seed = cfg.seed + s
                sub = _sub_dir(out, name, regime, seed)
                done += 1
                sub_cfg = config_from_dict(cfg.to_dict() | {"seed": seed, "out": str(sub)})
                feats = [] if s == 0 and regime is regimes[-1] else None
                if resume and (sub / "result.json").is_file():
                    r = json.loads((sub / "result.json").read_text())
                    _check_same(r.get("config", {}), _identity(sub_cfg), sub)
                    _check_source(r, sources.get(name), sub)
                    if r.get("data_signature") not in (None, data_sig):  # (sub-runs of older versions have none)
                        raise ConfigError(f"--resume: the files of --data {cfg.data} changed since {sub} was "
                                          "fine-tuned on them (sizes or modification times); put them back as they "
                                          "were, or use another --out")
                    metric = "top1" if "top1" in r else "auroc_mean"
                    print(f"  [{done}/{n_runs}] {name:<10} {regime_name(regime):>8} seed {seed}: test {metric} "
                          f"{r[metric]:.2f}, finished earlier: reused from {sub}")
                    results[name][regime_name(regime)].append(r)
                    reused += 1
                    if feats is not None and (sub / "test_features.pt").is_file():
                        saved = torch.load(sub / "test_features.pt", weights_only=True)
                        embeddings[f"fine-tuned from {name}, {regime_name(regime)} labels"] = (saved["features"],
                                                                                               saved["labels"])
                    continue
                idx = label_subset(labels, regime["label_fraction"], regime["labels_per_class"], seed) \
                    if subset else None
                try:
                    r = finetune_one(sub_cfg, splits, idx, init_states[name], sub, device,
                                     save_model=name == inits[0] and s == 0,
                                     desc=f"[{done}/{n_runs}] {name} {regime_name(regime)} seed {seed}",
                                     features=feats, source=sources.get(name), data_signature=data_sig)
                except TrainingInterrupted as e:
                    raise TrainingInterrupted(f"{e}. The {done - 1} finished fine-tuning runs are kept in {out}; "
                                              "run the same command with --resume to do only the rest",
                                              e.signum) from None
                if feats:
                    embeddings[f"fine-tuned from {name}, {regime_name(regime)} labels"] = feats[0]
                metric = "top1" if "top1" in r else "auroc_mean"
                print(f"  [{done}/{n_runs}] {name:<10} {regime_name(regime):>8} seed {seed}: test {metric} "
                      f"{r[metric]:.2f} (val {r['val_top1' if metric == 'top1' else 'val_auroc_mean']:.2f} at step "
                      f"{r['best_step']}/{r['steps']}, n_train {r['n_train']}, {r['seconds']:.0f}s)")
                results[name][regime_name(regime)].append(r)

    decay = results[inits[0]][regime_name(regimes[-1])][0]["layer_decay"]
    protocol = protocol_text(cfg, decay)
    ev: dict = {}
    by_regime: dict[str, dict] = {regime_name(r): {} for r in regimes}
    rows = []
    for name in inits:
        key = "finetune" if name == inits[0] else f"finetune_{name}"
        for regime in regimes:
            agg = aggregate(results[name][regime_name(regime)], regime, cfg) | {"protocol": protocol, "init": name}
            by_regime[regime_name(regime)][key] = agg
            rows += table_rows(agg, "finetune", name)
    ev.update(by_regime[regime_name(regimes[-1])])
    if len(regimes) > 1:
        ev["by_regime"] = by_regime
    ev["table"] = rows
    metrics = {"command": "finetune", "init": init, "inits": inits, "initialisation": notes,
               "checkpoint": str(runs.find_checkpoint(checkpoint)) if checkpoint else None,
               "config": cfg.to_dict(), "environment": runs.environment(), "eval": ev,
               "class_names": splits["train"].class_names,
               "timing": {"total_s": round(time.time() - t0, 1), "runs": n_runs, "reused_runs": reused}}
    write_metrics(out, metrics)
    from vissl_lite.eval.report import write_report

    curves = {f"{name} {regime_name(r)}": _sub_dir(out, name, r, cfg.seed) / "metrics.jsonl"
              for name in inits for r in regimes}
    report_path = write_report(out, metrics, embeddings or None, finetune_logs=curves)
    print(finetune_summary(metrics))
    print(f"  report: {report_path}")
    return metrics


def _sub_dir(out: Path, init: str, regime: dict, seed: int) -> Path:
    """``<out>/<init>/<regime>/seed<k>``, e.g. ``checkpoint/10pct/seed0`` or ``scratch/5-per-class/seed1``."""
    return out / init / regime_name(regime).replace("/", "-per-").replace("%", "pct") / f"seed{seed}"


def _check_same(saved: dict, now: dict, sub: Path) -> None:
    saved = {k: v for k, v in saved.items() if k not in RUN_ONLY}  # (older sub-runs kept some of them)
    if "data" in saved:  # sub-runs of older versions kept --data as typed
        saved = saved | {"data": absolute_spec(saved["data"])}
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if differ:
        detail = "; ".join(f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in differ[:4])
        raise ConfigError(f"--resume: {sub} was made with other settings ({detail}); resume with the same "
                          "settings, or use another --out")


def _check_source(saved: dict, now: dict | None, sub: Path) -> None:
    """A ConfigError when the sub-run in ``sub`` started from other weights than ``now`` (sub-runs written before
    vissl-lite recorded their initial weights carry no ``init_source`` and are not checked)."""
    if "init_source" not in saved:
        return
    then, now = saved["init_source"] or {}, now or {}
    if then.get("fingerprint") != now.get("fingerprint"):
        what = (f"{now.get('description')}, whose weights have changed since" if then.get("description") ==
                now.get("description") else f"{then.get('description')} then, {now.get('description')} now")
        raise ConfigError(f"--resume: {sub} was fine-tuned from other initial weights ({what}); resume with the "
                          "same --checkpoint / --init-weights, or use another --out")


def aggregate(per_seed: list[dict], regime: dict, cfg: RunConfig) -> dict:
    """The first seed's full result with headline numbers replaced by mean over seeds (+ ``_std``)."""
    return aggregate_seeds(per_seed, keep=("best_step",)) | {"label_regime": {
        "label_fraction": regime["label_fraction"], "labels_per_class": regime["labels_per_class"],
        "short_classes": regime.get("short_classes", 0), "name": regime_name(regime), "seeds": len(per_seed),
        "seed_values": [r["seed"] for r in per_seed]}}


def finetune_summary(metrics: dict) -> str:
    lines = []
    for row in metrics["eval"]["table"]:
        lines.append(row_line(row))
    lines.append(f"  protocol: {metrics['eval']['table'] and next(iter(metrics['eval'].values()))['protocol']}")
    return "\n".join(lines)
