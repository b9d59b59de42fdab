"""Linear-probe a trained backbone and, as the baseline, the same architecture at its random initialisation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from vissl_lite import runs
from vissl_lite.augment import EvalView
from vissl_lite.backbones import feature_pooling, in_chans_of
from vissl_lite.config import RunConfig, config_from_dict
from vissl_lite.data import ImageSet, load_split
from vissl_lite.eval.features import extract_features
from vissl_lite.eval.linear_probe import fit_linear_probe, protocol_text


def load_eval_splits(cfg: RunConfig, channels: int) -> dict[str, ImageSet]:
    splits = {}
    for split in ("train", "val", "test"):
        splits[split] = load_split(cfg.data, split, cfg.image_size, channels, cfg.val_fraction, cfg.data_mode,
                                   cfg.memory_limit_gb, cfg.progress)
    if not splits["train"].labeled:
        raise ValueError(f"--data {cfg.data} has no labels, so there is nothing to probe. Pretrain on it, then run "
                         "'vissl-lite linear-probe --checkpoint RUN --data LABELED_DATA'")
    return splits


def probe_backbone(embed, pooling: str, dim: int, splits: dict[str, ImageSet], cfg: RunConfig,
                   device: torch.device, tag: str) -> dict:
    """Extract features for every split once, then sweep the head's learning rate."""
    channels = splits["train"].channels
    view = EvalView(cfg.image_size, channels, cfg.mean, cfg.std).to(device)
    cached = {}
    for name, data in splits.items():
        cached[name] = extract_features(embed, data, view, device, progress=cfg.progress, desc=f"{tag} {name}")
    result = fit_linear_probe(cached["train"], cached["val"], cached["test"], splits["train"].num_classes,
                              cfg.probe_lrs, cfg.probe_epochs, cfg.probe_batch_size, cfg.seed)
    result["protocol"] = protocol_text(pooling, dim, cfg.probe_lrs, cfg.probe_epochs, cfg.probe_batch_size,
                                       f"eval view: {cfg.image_size}px centre, normalised")
    return result


def run_linear_probes(model: nn.Module, cfg: RunConfig, device: torch.device, baseline: bool = True,
                      splits: dict[str, ImageSet] | None = None) -> dict:
    """``{"linear_probe": ..., "linear_probe_random_init": ...}`` for a method module (anything with ``embed``
    and ``backbone``)."""
    channels = in_chans_of(model.backbone)
    splits = splits or load_eval_splits(cfg, channels)
    model.eval()
    backbone = model.backbone
    pooling, dim = feature_pooling(backbone), backbone.num_features
    out = {"linear_probe": probe_backbone(model.embed, pooling, dim, splits, cfg, device, "ssl")}
    if baseline:
        # The network pretraining started from: same architecture, same seed, no training.
        random_init = runs.build_model(cfg, channels).backbone.to(device).eval()
        out["linear_probe_random_init"] = probe_backbone(random_init, pooling, dim, splits, cfg, device, "random")
    return out


def linear_probe(checkpoint: str | Path, data: str | None = None, out: str | Path | None = None,
                 device: str = "auto", baseline: bool = True, **overrides) -> dict:
    """Probe a pretrained run; the Python twin of ``vissl-lite linear-probe``.

    Args:
        checkpoint: run folder or checkpoint file.
        data: labeled data to probe on (default: the data the run was pretrained on).
        out: folder for metrics.json (default: ``<run>/linear_probe``).
        baseline: also probe the random-init backbone.
        **overrides: probe settings (probe_epochs, probe_lrs, probe_batch_size, progress, ...).

    Returns:
        the metrics dict written to ``<out>/metrics.json``.
    """
    t0 = time.time()
    dev = runs.resolve_device(device)
    cfg, model, ckpt = runs.load_run(checkpoint, dev)
    allowed = {"probe_epochs", "probe_lrs", "probe_batch_size", "progress", "data_mode", "memory_limit_gb",
               "val_fraction", "seed"}
    bad = sorted(set(overrides) - allowed)
    if bad:
        raise ValueError(f"linear_probe does not take {', '.join(bad)}; valid: {', '.join(sorted(allowed))}")
    cfg = config_from_dict(cfg.to_dict() | overrides | ({"data": data} if data else {}))
    run_dir = runs.find_checkpoint(checkpoint).parent
    out_dir = Path(out) if out else run_dir / "linear_probe"
    results = run_linear_probes(model, cfg, dev, baseline=baseline)
    metrics = {
        "command": "linear-probe", "checkpoint": str(runs.find_checkpoint(checkpoint)), "step": ckpt["step"],
        "config": cfg.to_dict(), "environment": runs.environment(), "eval": results,
        "timing": {"total_s": round(time.time() - t0, 2)},
    }
    write_metrics(out_dir, metrics)
    print(summary(metrics))
    return metrics


def write_metrics(out_dir: Path, metrics: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, default=str))
    tmp.replace(path)
    return path


def summary(metrics: dict) -> str:
    """A few human lines: each probe's test top-1, the chosen lr, and the protocol once."""
    ev = metrics.get("eval", {})
    lines = []
    for key, label in (("linear_probe", "SSL backbone"), ("linear_probe_random_init", "random-init backbone")):
        if key in ev:
            r = ev[key]
            lines.append(f"  linear probe, {label:<21} test top-1 {r['top1']:6.2f}%  (val {r['val_top1']:.2f}%, "
                         f"lr {r['lr']:g})")
    if "linear_probe" in ev and "linear_probe_random_init" in ev:
        gain = ev["linear_probe"]["top1"] - ev["linear_probe_random_init"]["top1"]
        lines.append(f"  gain from pretraining: {gain:+.2f} points")
    if "linear_probe" in ev:
        lines.append(f"  protocol: {ev['linear_probe']['protocol']}")
    return "\n".join(lines)
