"""Evaluate a trained backbone (linear probe, kNN) and, as the baseline, the same architecture at its random
initialisation. Features are extracted once per backbone and split, and shared by every evaluation."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vissl_lite import runs
from vissl_lite.augment import EvalView
from vissl_lite.backbones import feature_pooling, in_chans_of
from vissl_lite.config import RunConfig, atomic_write_text, config_from_dict, label_choice
from vissl_lite.data import ImageSet, channel_note, data_name, label_subset, load_split, skipped_files
from vissl_lite.data.datasets import absolute_spec, same_data
from vissl_lite.eval.features import extract_features
from vissl_lite.eval.knn import knn_eval, knn_protocol
from vissl_lite.eval.linear_probe import fit_linear_probe, protocol_text


def load_eval_splits(cfg: RunConfig, channels: int, train: ImageSet | None = None) -> dict[str, ImageSet]:
    """Labeled train/val/test splits of ``cfg.data``, or a ValueError that says why not. ``train``: the train
    split when the caller already loaded it (pretraining has), so it is not decoded twice."""
    loaded = ["val", "test"] + (["train"] if train is None else [])  # pretraining reports its own train split
    pretraining = train is not None  # its --data is what it trains on: the advice is a later linear-probe
    if train is None:
        train = load_split(cfg.data, "train", cfg.image_size, channels, cfg.val_fraction, cfg.data_mode,
                           cfg.memory_limit_gb, cfg.progress, cfg.on_bad_file, cfg.window)
    if not train.labeled:
        layout = f" ({train.layout})" if train.layout else ""
        raise ValueError(f"--data {cfg.data} has no labels, so there is nothing to evaluate on{layout}"
                         + ("" if pretraining else "; pass labeled data with --data"))
    if not train.multilabel and train.num_classes < 2:  # every probe would score 100% by answering that class
        named = f" ('{train.class_names[0]}')" if train.class_names else ""
        raise ValueError(f"--data {cfg.data} has one class{named}, so there is nothing to classify"
                         + ("" if pretraining else "; pass data with at least 2 classes with --data"))
    splits = {"train": train}
    for split in ("val", "test"):
        splits[split] = load_split(cfg.data, split, cfg.image_size, channels, cfg.val_fraction, cfg.data_mode,
                                   cfg.memory_limit_gb, cfg.progress, cfg.on_bad_file, cfg.window)
    for note in (train.layout and f"note: {train.layout}", channel_note(train, cfg.data), train.window_note):
        if "train" in loaded and note:
            print("  " + note)
    for name in loaded:
        data = splits[name]
        if data.skipped:
            print(f"  note: skipped {len(data.skipped)} unreadable {name} file(s), e.g. {data.skipped[0]}")
    for name, data in splits.items():
        if len(data) == 0 or (data.labels < 0).any():
            raise ValueError(f"the {name} split of {cfg.data} is {'empty' if len(data) == 0 else 'unlabeled'}; "
                             "evaluation needs labeled train, val and test splits (a folder needs at least 2 "
                             "images per class to carve them)")
    return splits


def backbone_features(embed, splits: dict[str, ImageSet], cfg: RunConfig, device: torch.device,
                      tag: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Features and labels of every split through the deterministic eval view, extracted once."""
    view = EvalView(cfg.image_size, splits["train"].channels, cfg.mean, cfg.std).to(device)
    return {name: extract_features(embed, data, view, device, progress=cfg.progress, desc=f"{tag} {name}")
            for name, data in splits.items()}


def label_regimes(cfg: RunConfig, labels: np.ndarray | None = None) -> list[dict]:
    """The labeled-subset settings to evaluate, smallest first: K per class, or fractions of each class.

    Given the train ``labels`` (single-label), each K-per-class regime also counts its ``short_classes``: classes
    with fewer than K labeled images, which :func:`label_subset` gives all they have."""
    if cfg.labels_per_class:
        counts = None
        if labels is not None and np.ndim(labels) == 1:
            labels = np.asarray(labels)
            counts = np.unique(labels[labels >= 0], return_counts=True)[1]
        return [{"label_fraction": 1.0, "labels_per_class": int(k),
                 "short_classes": int((counts < k).sum()) if counts is not None else 0}
                for k in sorted(set(cfg.labels_per_class))]
    return [{"label_fraction": float(f), "labels_per_class": 0} for f in sorted(set(cfg.label_fraction))]


def short_class_note(regimes: list[dict], num_classes: int) -> str:
    """A console line for K-per-class regimes that some classes cannot fill ('' when all can)."""
    short = [f"{regime_name(r)} ({r['short_classes']} of {num_classes} classes)" for r in regimes
             if r.get("short_classes")]
    if not short:
        return ""
    return (f"  note: fewer labeled train images than asked in {', '.join(short)}: those classes use all they have; "
            "the n column counts the images actually used")


def regime_name(regime: dict) -> str:
    if regime["labels_per_class"]:
        return f"{regime['labels_per_class']}/class"
    return f"{regime['label_fraction'] * 100:g}%"


def seed_std(values) -> float:
    """The sample standard deviation (n - 1) of per-seed values; 0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _headline(result: dict) -> dict:
    """The numbers a seed contributes to mean +- std: top-1, macro AUROC, balanced accuracy and how many classes
    the model predicted (1: it collapsed to one class), or mean AUROC and mAP."""
    if "top1" in result and not isinstance(result["top1"], dict):
        m = result.get("metrics", {})
        return {"top1": result["top1"], "auroc": m.get("auroc_macro"), "balanced": m.get("balanced_accuracy"),
                "predicted_classes": m.get("predicted_classes")}
    if "auroc_mean" in result:
        return {"auroc_mean": result["auroc_mean"], "map": result["map"]}
    return {}


def evaluate_features(cached: dict, num_classes: int, pooling: str, dim: int, cfg: RunConfig,
                      which: tuple[str, ...], regime: dict | None = None) -> dict:
    """Run the evaluations named in ``which`` ('linear_probe', 'knn') on cached features for one label regime
    (default: the last of :func:`label_regimes`), once per seed on a seeded labeled subset of train when a
    low-label regime or several seeds are asked for."""
    regime = regime or label_regimes(cfg)[-1]
    subset = regime["label_fraction"] < 1.0 or regime["labels_per_class"] > 0
    info = {"label_fraction": regime["label_fraction"], "labels_per_class": regime["labels_per_class"],
            "short_classes": regime.get("short_classes", 0), "name": regime_name(regime), "seeds": cfg.seeds,
            "seed_values": [cfg.seed + s for s in range(cfg.seeds)]}
    if not subset and cfg.seeds == 1:
        out = _evaluate_once(cached, num_classes, pooling, dim, cfg, which)
        for name, r in out.items():
            if "skipped" not in r:
                seed_result = r["top1"] if name == "knn" else _headline(r) | {"lr": r["lr"]}
                r |= {"label_regime": info, "per_seed": [seed_result]}
                if name == "knn":
                    r["per_seed_auroc"] = [_knn_auroc(r)]
        return out
    x, y = cached["train"]
    labels = y.cpu().numpy()
    runs_ = []
    for s in range(cfg.seeds):
        seed = cfg.seed + s
        idx = label_subset(labels, regime["label_fraction"], regime["labels_per_class"], seed) if subset else None
        train = (x[idx], y[idx]) if idx is not None else (x, y)
        seeded = config_from_dict(cfg.to_dict() | {"seed": seed})
        runs_.append(_evaluate_once(cached | {"train": train}, num_classes, pooling, dim, seeded, which))
    return {name: aggregate_seeds([r[name] for r in runs_]) | {"label_regime": info} for name in runs_[0]}


def aggregate_seeds(results: list[dict], keep: tuple[str, ...] = ("lr",)) -> dict:
    """The first seed's full result, with every headline number replaced by its mean over seeds and a ``_std``
    beside it; ``per_seed`` keeps each seed's headline numbers and its ``keep`` entries (e.g. the chosen lr)."""
    out = dict(results[0])
    if "skipped" in out:
        return out
    if len(results) > 1 and "metrics" in out:  # said in the file, since 'metrics' sits beside the means
        out["metrics_note"] = ("'metrics' holds the first seed's full result (its per-class numbers and confusion "
                               "matrix); the headline numbers beside it are means over the seeds, each seed's in "
                               "'per_seed'")
    if isinstance(out.get("top1"), dict):  # kNN: top-1 per k
        ks = list(out["top1"])
        out["top1"] = {k: float(np.mean([r["top1"][k] for r in results])) for k in ks}
        out["top1_std"] = {k: seed_std([r["top1"][k] for r in results]) for k in ks}
        out["per_seed"] = [r["top1"] for r in results]
        out["per_seed_auroc"] = [_knn_auroc(r) for r in results]
        out["per_seed_predicted_classes"] = [{k: m.get("predicted_classes") for k, m in r["metrics"].items()}
                                             for r in results]
        out["n_train"] = [r["n_train"] for r in results]
        return out
    heads = [k for k in ("top1", "auroc_mean", "map") if k in out]
    for k in heads:
        out[k] = float(np.mean([r[k] for r in results]))
        out[k + "_std"] = seed_std([r[k] for r in results])
    out["per_seed"] = [_headline(r) | {k: r[k] for k in keep} for r in results]
    out["n_train"] = [r["n_train"] for r in results]
    return out


def _knn_auroc(result: dict) -> dict:
    """Macro AUROC of the normalised kNN votes, per k."""
    return {k: m.get("auroc_macro") for k, m in result["metrics"].items()}


def table_rows(results: dict, protocol: str, init: str) -> list[dict]:
    """One row per (protocol, init, regime[, k]) from an aggregated result: the tidy form behind report tables
    and label-efficiency plots. Each row has ``metric``, ``mean``, ``std`` and ``values`` (one per seed), plus
    ``auroc_mean``/``auroc_std`` for single-label results (macro one-vs-rest AUROC)."""
    if "skipped" in results:
        return []
    regime = results["label_regime"]
    n_train = results["n_train"]
    base = {"protocol": protocol, "init": init, "regime": regime["name"], "label_fraction": regime["label_fraction"],
            "labels_per_class": regime["labels_per_class"], "short_classes": regime.get("short_classes", 0),
            "seeds": regime["seeds"],
            "n_train": int(round(float(np.mean(n_train)))) if isinstance(n_train, list) else n_train}
    seeds = results["per_seed"]
    if protocol == "knn":
        rows = []
        for k in seeds[0]:
            values = [s[k] for s in seeds]
            row = base | {"protocol": f"knn k={k}", "metric": "top1", "values": values,
                          "mean": float(np.mean(values)), "std": seed_std(values)}
            aucs = [a.get(k) for a in results.get("per_seed_auroc", [])]
            if aucs and all(a is not None for a in aucs):
                row |= {"auroc_mean": float(np.mean(aucs)), "auroc_std": seed_std(aucs)}
            rows.append(row | _one_class([p.get(k) for p in results.get("per_seed_predicted_classes", [])]))
        return rows
    metric = "top1" if "top1" in seeds[0] else "auroc_mean"
    values = [s[metric] for s in seeds]
    row = base | {"metric": metric, "values": values, "mean": float(np.mean(values)), "std": seed_std(values)}
    aucs = [s.get("auroc") for s in seeds]
    if metric == "top1" and all(a is not None for a in aucs):
        row |= {"auroc_mean": float(np.mean(aucs)), "auroc_std": seed_std(aucs)}
    maps = [s.get("map") for s in seeds]
    if metric == "auroc_mean" and all(m is not None for m in maps):  # multi-label: mAP beside the mean AUROC
        row |= {"map_mean": float(np.mean(maps)), "map_std": seed_std(maps)}
    return [row | _one_class([s.get("predicted_classes") for s in seeds])]


def _one_class(predicted_classes: list) -> dict:
    """``one_class_seeds``: how many seeds' models gave every test image the same class (when recorded)."""
    known = [c for c in predicted_classes if c is not None]
    return {"one_class_seeds": sum(c == 1 for c in known)} if known else {}


def _evaluate_once(cached: dict, num_classes: int, pooling: str, dim: int, cfg: RunConfig,
                   which: tuple[str, ...]) -> dict:
    view = f"eval view: {cfg.image_size}px centre, normalised"
    out = {}
    multilabel = cached["train"][1].ndim == 2
    if "linear_probe" in which:
        out["linear_probe"] = fit_linear_probe(cached["train"], cached["val"], cached["test"], num_classes,
                                               cfg.probe_lrs, cfg.probe_epochs, cfg.probe_batch_size, cfg.seed)
        out["linear_probe"]["protocol"] = protocol_text(pooling, dim, cfg.probe_lrs, cfg.probe_epochs,
                                                        cfg.probe_batch_size, view, multilabel)
    if "knn" in which and multilabel:
        out["knn"] = {"skipped": "kNN voting is single-label; this data is multi-label (see linear_probe)"}
    elif "knn" in which:
        out["knn"] = knn_eval(cached["train"], cached["test"], num_classes, cfg.knn_k, cfg.knn_temperature)
        out["knn"] |= {"split": "test", "protocol": knn_protocol(pooling, dim, cfg.knn_k, cfg.knn_temperature, view)}
    return out


def run_evaluations(model: nn.Module, cfg: RunConfig, device: torch.device, baseline: bool = True,
                    splits: dict[str, ImageSet] | None = None,
                    which: tuple[str, ...] = ("linear_probe", "knn"), features: dict | None = None,
                    weights_file: str | Path | None = None) -> dict:
    """``{"linear_probe", "knn", "linear_probe_random_init", "knn_random_init"}`` (those in ``which``) for a method
    module (anything with ``embed`` and ``backbone``), at the last label regime, plus ``table`` (one row per
    protocol, init and regime) and, with several regimes, ``by_regime``. The baseline is the network pretraining
    started from: same architecture, same seed, no training.

    Args:
        features: if given, filled with each init's test features and labels (for the embedding plot).
        weights_file: also evaluate the frozen features of this timm weights file (e.g. ImageNet weights), as
            ``<protocol>_weights``.
    """
    channels = in_chans_of(model.backbone)
    splits = splits or load_eval_splits(cfg, channels)
    num_classes = splits["train"].num_classes
    model.eval()
    pooling, dim = feature_pooling(model.backbone), model.backbone.num_features
    candidates = [("", model.embed, "ssl")]
    if baseline:
        candidates.append(("_random_init", runs.build_model(cfg, channels).backbone.to(device).eval(), "random_init"))
    if weights_file:
        from vissl_lite.backbones import load_weights_file

        supplied = runs.build_model(cfg, channels).backbone
        load_weights_file(supplied, str(weights_file))
        candidates.append(("_weights", supplied.to(device).eval(), "weights"))
    regimes = label_regimes(cfg, splits["train"].labels.numpy())
    if note := short_class_note(regimes, num_classes):
        print(note)
    by_regime: dict[str, dict] = {regime_name(r): {} for r in regimes}
    rows = []
    for suffix, embed, tag in candidates:
        cached = backbone_features(embed, splits, cfg, device, tag)
        if features is not None:
            features[tag] = tuple(t.cpu() for t in cached["test"])
        for regime in regimes:
            for name, result in evaluate_features(cached, num_classes, pooling, dim, cfg, which, regime).items():
                by_regime[regime_name(regime)][name + suffix] = result
                rows += table_rows(result, name, tag)
    out = dict(by_regime[regime_name(regimes[-1])])
    if len(regimes) > 1:
        out["by_regime"] = by_regime
    out["table"] = rows
    return out


def linear_probe(checkpoint: str | Path, data: str | None = None, out: str | Path | None = None,
                 device: str = "auto", baseline: bool = True, **overrides) -> dict:
    """Probe a pretrained run; the Python twin of ``vissl-lite linear-probe``."""
    return evaluate_run("linear-probe", checkpoint, data, out, device, baseline, **overrides)


def knn(checkpoint: str | Path, data: str | None = None, out: str | Path | None = None, device: str = "auto",
        baseline: bool = True, **overrides) -> dict:
    """Weighted kNN on a pretrained run's frozen features; the Python twin of ``vissl-lite knn``. Same arguments as
    :func:`linear_probe`; overrides may set knn_k and knn_temperature. Writes ``<out>/metrics.json``
    (default ``<run>/knn``, or ``<run>/knn_<data name>`` for other ``data``)."""
    return evaluate_run("knn", checkpoint, data, out, device, baseline, **overrides)


def evaluate_run(command: str, checkpoint: str | Path, data: str | None = None, out: str | Path | None = None,
                 device: str = "auto", baseline: bool = True, **overrides) -> dict:
    """Load a run, evaluate it (``command``: 'linear-probe' or 'knn'), write metrics.json, print a summary.

    Args:
        checkpoint: run folder or checkpoint file.
        data: labeled data to probe on (default: the data the run was pretrained on).
        out: folder for metrics.json (default: ``<run>/linear_probe``, or ``<run>/linear_probe_<data name>`` for
            ``data`` other than the run's own, so evaluations on other data do not replace each other).
        baseline: also probe the random-init backbone.
        **overrides: probe settings (probe_epochs, probe_lrs, probe_batch_size, progress, ...).

    Returns:
        the metrics dict written to ``<out>/metrics.json``.
    """
    t0 = time.time()
    dev = runs.resolve_device(device)
    cfg, model, ckpt = runs.load_run(checkpoint, dev)
    allowed = {"probe_epochs", "probe_lrs", "probe_batch_size", "progress", "data_mode", "memory_limit_gb",
               "val_fraction", "seed", "knn_k", "knn_temperature", "label_fraction", "labels_per_class", "seeds",
               "on_bad_file"}
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise ValueError(f"{command} does not take {', '.join(bad)}; valid: {', '.join(sorted(allowed))}")
    runs.check_split_fraction(checkpoint, ckpt["config"], data, overrides.get("val_fraction"))
    runs.check_split_rule(checkpoint, ckpt, data)
    cfg = config_from_dict(cfg.to_dict() | overrides | label_choice(overrides) | ({"data": data} if data else {}))
    run_dir = runs.find_checkpoint(checkpoint).parent
    out_dir = Path(out) if out else run_dir / default_eval_folder(command, run_dir, data, ckpt["config"].get("data"))
    runs.check_out_folder(out_dir, command)
    replacing = (out_dir / "metrics.json").is_file()  # said once the new result is written over it
    features: dict = {}
    splits = load_eval_splits(cfg, in_chans_of(model.backbone))
    train = splits["train"]
    print(f"vissl-lite {command}: {cfg.backbone} from {run_dir} (step {ckpt['step']}) on {train.name} "
          f"({len(train)} train / {len(splits['val'])} val / {len(splits['test'])} test, {train.num_classes} "
          f"{'labels' if train.multilabel else 'classes'}, {train.channels}ch, {cfg.image_size}px) on {dev} "
          f"-> {out_dir}")
    if replacing:
        print(f"  note: this replaces the earlier {command} result in {out_dir} (pass --out DIR to keep both)")
    results = run_evaluations(model, cfg, dev, baseline=baseline, splits=splits, which=(command.replace("-", "_"),),
                              features=features)
    metrics = {
        "command": command, "checkpoint": str(runs.find_checkpoint(checkpoint)), "step": ckpt["step"],
        "config": cfg.to_dict(), "environment": runs.environment(), "eval": results,
        "class_names": splits["train"].class_names, "skipped_files": skipped_files(splits),
        "timing": {"total_s": round(time.time() - t0, 2)},
    }
    write_metrics(out_dir, metrics)
    from vissl_lite.eval.report import write_report

    report = write_report(out_dir, metrics, features, train_curves=run_dir / "train_curves.png")
    print(summary(metrics))
    print(f"  report: {report}")
    return metrics


def default_eval_folder(command: str, run_dir: Path, data: str | None, own: str | None) -> str:
    """The folder name inside the run where ``command`` writes by default: ``linear_probe`` (or ``knn``) for the
    run's own data; ``linear_probe_<data name>`` for other data, so that evaluations on other data land beside the
    run's own result, not over it, with a short hash of the data's path added when that name already holds the
    result of other data of the same name."""
    base = command.replace("-", "_")
    if not data or same_data(str(data), str(own)):
        return base
    name = f"{base}_{data_name(absolute_spec(str(data))) or 'data'}"
    try:
        held = json.loads((run_dir / name / "metrics.json").read_text())["config"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return name
    if same_data(str(held), str(data)):
        return name
    return f"{name}-{hashlib.sha1(absolute_spec(str(data)).encode()).hexdigest()[:6]}"


def write_metrics(out_dir: Path, metrics: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    atomic_write_text(path, json.dumps(metrics, indent=2, default=str))
    return path


def knn_k_clamped(row: dict) -> bool:
    """Whether a results-table row is a kNN row whose k exceeds its labeled images (knn_predict clamps k)."""
    return row["protocol"].startswith("knn k=") and int(row["protocol"][6:]) > row["n_train"]


def row_line(row: dict) -> str:
    """One console line for a results-table row (:func:`table_rows`), the same in every command."""
    top1 = row["metric"] == "top1"
    value = f"test {'top-1' if top1 else 'mean AUROC'} {row['mean']:6.2f} +- {row['std']:.2f}{'%' if top1 else ''}"
    auc = f"  macro AUROC {row['auroc_mean']:.2f} +- {row['auroc_std']:.2f}" if top1 and "auroc_mean" in row else ""
    seeds = f"{row['seeds']} seed{'' if row['seeds'] == 1 else 's'}"
    clamped = knn_k_clamped(row)
    capped = f", {row['short_classes']} classes short of {row['regime']}" if row.get("short_classes") else ""
    return (f"  {row['protocol'].replace('_', ' '):<13} {row['init']:<11} {row['regime']:>8} labels "
            f"(n={row['n_train']:>5}): {value}{auc}  ({seeds}{', k clamped to n' if clamped else ''}{capped})")


def summary(metrics: dict) -> str:
    """A few human lines: each probe's test top-1, the chosen lr, and the protocol once; with several label
    regimes, one line per (protocol, init, regime) instead, as fine-tuning prints."""
    ev = metrics.get("eval", {})
    rows = ev.get("table", [])
    if len({r["regime"] for r in rows}) > 1:
        lines = [row_line(r) for r in rows]
        if "linear_probe" in ev:
            lines.append(f"  protocol: {ev['linear_probe']['protocol']}")
        if "knn" in ev and "protocol" in ev["knn"]:
            lines.append(f"  kNN protocol: {ev['knn']['protocol']}")
        return "\n".join(lines + _knn_skipped(ev))
    lines = []
    for key, label in (("linear_probe", "SSL backbone"), ("linear_probe_random_init", "random-init backbone")):
        if key in ev:
            r, m = ev[key], ev[key]["metrics"]
            if "top1_std" in r:  # low-label regime / several seeds: mean +- std
                regime = r["label_regime"]
                share = f"{regime['name']} of labels"
                lines.append(f"  linear probe, {label:<21} test top-1 {r['top1']:6.2f} +- {r['top1_std']:.2f}%  "
                             f"({share}, {regime['seeds']} seed{'' if regime['seeds'] == 1 else 's'}, "
                             f"n_train {r['n_train']})")
            elif "top1" in r:
                auroc = "n/a" if m["auroc_macro"] is None else f"{m['auroc_macro']:.2f}"
                lines.append(f"  linear probe, {label:<21} test top-1 {r['top1']:6.2f}%  balanced acc "
                             f"{m['balanced_accuracy']:.2f}%  macro AUROC {auroc}  (val top-1 {r['val_top1']:.2f}%, "
                             f"lr {r['lr']:g})")
            else:
                lines.append(f"  linear probe, {label:<21} test mean AUROC {r['auroc_mean']:6.2f}  mAP "
                             f"{r['map']:.2f}  (val mean AUROC {r['val_auroc_mean']:.2f}, lr {r['lr']:g})")
    if "linear_probe" in ev and "linear_probe_random_init" in ev:
        metric = "top1" if "top1" in ev["linear_probe"] else "auroc_mean"
        ssl, rnd = ev["linear_probe"], ev["linear_probe_random_init"]
        gain = f"{ssl[metric] - rnd[metric]:+.2f} points {'top-1' if metric == 'top1' else 'mean AUROC'}"
        if metric == "top1" and "top1_std" not in ssl:  # one full-label run each: its other metrics too
            a, b = ssl["metrics"], rnd["metrics"]
            gain += f", {a['balanced_accuracy'] - b['balanced_accuracy']:+.2f} balanced accuracy"
            if a["auroc_macro"] is not None and b["auroc_macro"] is not None:
                gain += f", {a['auroc_macro'] - b['auroc_macro']:+.2f} macro AUROC"
        lines.append(f"  gain from pretraining: {gain}")
        for key, label in (("linear_probe", "SSL"), ("linear_probe_random_init", "random-init")):
            if ev[key].get("metrics", {}).get("predicted_classes") == 1 and "top1_std" not in ev[key]:
                lines.append(f"  note: the {label} probe gives every test image the same class; its top-1 is that "
                             "class's share of the test split")
    if "linear_probe" in ev:
        lines.append(f"  protocol: {ev['linear_probe']['protocol']}")
    for key, label in (("knn", "SSL backbone"), ("knn_random_init", "random-init backbone")):
        if key in ev and "top1" in ev[key]:
            std, n = ev[key].get("top1_std", {}), ev[key]["n_train"]
            n = int(round(float(np.mean(n)))) if isinstance(n, list) else n
            accs = ", ".join(f"k={k}{f' (clamped to {n})' if int(k) > n else ''}: {v:.2f}"
                             + (f" +- {std[k]:.2f}" if k in std else "") + "%" for k, v in ev[key]["top1"].items())
            regime = ev[key].get("label_regime")
            if regime and (regime["name"] != "100%" or regime["seeds"] > 1):  # as the linear probe's line says
                accs += (f"  ({regime['name']} of labels, {regime['seeds']} seed{'' if regime['seeds'] == 1 else 's'}, "
                         f"n_train {n})")
            lines.append(f"  kNN, {label:<21} test top-1 {accs}")
    if "knn" in ev and "protocol" in ev["knn"]:
        lines.append(f"  kNN protocol: {ev['knn']['protocol']}")
    return "\n".join(lines + _knn_skipped(ev))


def _knn_skipped(ev: dict) -> list[str]:
    return [f"  kNN skipped: {ev['knn']['skipped']}"] if "skipped" in ev.get("knn", {}) else []
