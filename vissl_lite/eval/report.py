"""report.md and its plots for every evaluation: a results table, a label-efficiency curve (one line per protocol
and initialisation, error bars over seeds), a confusion matrix, a 2-D embedding of test features and the
training curves. Plots are PNG files next to report.md."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from vissl_lite.config import atomic_write_text


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.2f} ± {std:.2f}" if seeds > 1 else f"{mean:.2f}"


INIT_NAMES = {"ssl": "SSL", "checkpoint": "SSL", "random_init": "random init", "scratch": "random init (scratch)",
              "weights": "supplied weights"}  # metrics.json's init keys as tables and plot legends show them


def protocol_name(protocol: str) -> str:
    return {"linear_probe": "linear probe", "finetune": "fine-tune"}.get(protocol, protocol.replace("knn", "kNN"))


def init_name(init: str) -> str:
    return INIT_NAMES.get(init, init)


def results_table(rows: list[dict]) -> str:
    """Markdown: one line per (protocol, init, regime)."""
    if not rows:
        return "_no results_\n"
    single = any(r["metric"] == "top1" for r in rows)
    head = "| protocol | init | labels | n train | " + ("test top-1 (%) | test macro AUROC |" if single else
                                                       "test mean AUROC (%) | test mAP (%) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [protocol_name(r["protocol"]), init_name(r["init"]), r["regime"], str(r["n_train"]),
                 _fmt(r["mean"], r["std"], r["seeds"])]
        other = ("auroc_mean", "auroc_std") if single else ("map_mean", "map_std")
        cells.append(_fmt(r[other[0]], r[other[1]], r["seeds"]) if other[0] in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    seeds = max(r["seeds"] for r in rows)
    note = f"\nMean ± std over {seeds} seeds (label subset and head/initialisation seed).\n" if seeds > 1 else "\n"
    short = sorted({r["regime"] for r in rows if r.get("short_classes")}, key=lambda n: int(n.split("/")[0]))
    if short:
        note += (f"{', '.join(short)}: some classes have fewer labeled train images than that and use all they have "
                 "(n train counts the images used).\n")
    return "\n".join(lines) + "\n" + note + knn_clamp_note(rows)


def knn_clamp_note(rows: list[dict]) -> str:
    """A line naming the kNN rows whose k exceeds their labeled images (knn_predict clamps k to the bank), so no
    row claims k neighbours it did not have; empty when there are none."""
    from vissl_lite.eval.probe import knn_k_clamped

    small = sorted({protocol_name(r["protocol"]) for r in rows if knn_k_clamped(r)})
    if not small:
        return ""
    return f"{', '.join(small)}: where n train is below k, every labeled image votes (k is clamped to n train).\n"


def plot_label_efficiency(rows: list[dict], png: Path, title: str = "") -> Path | None:
    """Metric against labeled train images (log scale), one line per (protocol, init), error bars = std."""
    series: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        series.setdefault((r["protocol"], r["init"]), []).append(r)
    if all(len(v) < 2 for v in series.values()):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.2, 4.2))
    styles = {"ssl": "-", "checkpoint": "-", "weights": "-.", "random_init": "--", "scratch": "--"}
    colours = {}
    for (protocol, init), pts in series.items():
        pts = sorted(pts, key=lambda r: r["n_train"])
        colour = colours.setdefault(protocol, f"C{len(colours)}")
        ax.errorbar([p["n_train"] for p in pts], [p["mean"] for p in pts], yerr=[p["std"] for p in pts],
                    label=f"{protocol_name(protocol)} · {init_name(init)}", color=colour,
                    linestyle=styles.get(init, ":"), marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("labeled train images (log scale)")
    metric = rows[0]["metric"]
    ax.set_ylabel({"top1": "test top-1 (%)", "auroc_mean": "test mean AUROC",
                   "auroc_macro": "test macro AUROC (%)"}.get(metric, metric))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the lines stay visible
    ax.set_title(title or "label efficiency", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_confusion(matrix: list[list[int]], png: Path, class_names: list[str] | None = None,
                   title: str = "") -> Path:
    """Row-normalised confusion matrix (true class per row) with the counts written in each cell."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    k = len(m)
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)
    names = class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
    size = min(12.0, 2.5 + 0.55 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def pca_2d(x: torch.Tensor) -> np.ndarray:
    """The first two principal components of features (N, D)."""
    x = x.float()
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).numpy()


def plot_embedding(features: dict[str, tuple[torch.Tensor, torch.Tensor]], png: Path,
                   class_names: list[str] | None = None, max_points: int = 3000) -> Path:
    """One panel per initialisation: test features projected on their first two principal components, coloured
    by class (multi-label data: by the first positive label)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(features), figsize=(4.6 * len(features), 4.2), squeeze=False)
    for ax, (name, (x, y)) in zip(axes[0], features.items()):
        if len(x) > max_points:  # a fixed, evenly spaced sample keeps the plot readable and deterministic
            keep = torch.linspace(0, len(x) - 1, max_points).long()
            x, y = x[keep], y[keep]
        multilabel = y.ndim == 2
        if multilabel:  # one colour per point: its first positive label, grey for none
            y = torch.where(y.sum(1) > 0, y.argmax(1), -1)
        xy = pca_2d(x)
        classes = sorted(int(c) for c in torch.unique(y))
        for c in classes:
            sel = (y == c).numpy()
            label = class_names[c] if class_names and 0 <= c < len(class_names) else str(c)
            if multilabel and c < 0:
                label = "no label"
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, alpha=0.6, label=label,
                       color=f"C{c % 10}" if c >= 0 else "grey")
        ax.set_title(f"{name}: test features, PCA" + (", by first positive label" if multilabel else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(classes) <= 12:
            ax.legend(fontsize=6, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def plot_finetune_curves(logs: dict[str, Path], png: Path) -> Path | None:
    """Training loss and validation score against the fraction of the schedule, one line per sub-run."""
    series = {}
    for name, path in logs.items():
        if Path(path).is_file():
            series[name] = [json.loads(line) for line in Path(path).read_text().splitlines()]
    if not series:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, records) in enumerate(series.items()):
        last = max([r["step"] for r in records] + [1])
        loss = [(r["step"] / last, r["loss"]) for r in records if "loss" in r]
        val_key = next((k for r in records for k in r if k.startswith("val_")), None)
        val = [(r["step"] / last, r[val_key]) for r in records if val_key in r] if val_key else []
        style = "--" if "scratch" in name or "random" in name else "-"
        if loss:
            axes[0].plot(*zip(*loss), style, color=f"C{i % 10}", label=name,  # a short run's few points show too
                         marker="o" if len(loss) <= 20 else None, markersize=3)
        if val:
            axes[1].plot(*zip(*val), style, color=f"C{i % 10}", marker="o", markersize=3, label=name)
            axes[1].set_ylabel(val_key.replace("_", " "))
    axes[0].set_title("training loss", fontsize=9)
    axes[1].set_title("validation score (the best point is kept)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("fraction of the schedule")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _main_result(ev: dict) -> tuple[str, dict, dict] | None:
    """(name, result, its full test metrics) of the protocol whose confusion matrix the report shows: fine-tuning,
    else the linear probe, else kNN at its first k (kNN keeps full metrics per k)."""
    for key in ("finetune", "linear_probe", "knn"):
        if key in ev and "metrics" in ev[key]:
            full = ev[key]["metrics"]
            if key == "knn" and full:
                k = next(iter(full))
                return f"knn k={k}", ev[key], full[k]
            return key, ev[key], full
    return None


def _training_line(train: dict, batch_size) -> str:
    """'400 steps (10.0 epochs) of 128 images, 97.1 s, final loss 3.27', with the process count when several."""
    processes = train.get("processes", 1)
    several = f" ({processes} processes of {batch_size})" if processes > 1 else ""
    return (f"{train['steps']} steps ({train['epochs']} epochs) of {train.get('global_batch', batch_size)} "
            f"images{several}, {train['seconds']} s, final loss {train['final_loss']}")


# The pictures write_report draws beside report.md (each only when its results are there)
REPORT_PNGS = ("label_efficiency.png", "confusion_matrix.png", "embedding.png", "finetune_curves.png")


def write_report(out: Path, metrics: dict, features: dict | None = None, finetune_logs: dict | None = None,
                 train_curves: Path | None = None) -> Path:
    """Write ``<out>/report.md`` (and its PNGs) for one command's metrics.json content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the pictures the earlier report here showed, which this one may not draw (e.g. one label regime now); only
    # those it linked, so a PNG of the same name that is not ours stays
    earlier = (out / "report.md").read_text(errors="replace") if (out / "report.md").is_file() else ""
    for name in REPORT_PNGS:
        if f"]({name})" in earlier:
            (out / name).unlink(missing_ok=True)
    ev = metrics.get("eval", {})
    cfg = metrics.get("config", {})
    env = metrics.get("environment", {})
    rows = ev.get("table", [])
    names = metrics.get("class_names") or None

    def rel(p: Path) -> str:
        return os.path.relpath(p, out)

    lines = [f"# vissl-lite {metrics.get('command', '')} report", ""]
    train = metrics.get("train") or {}
    trained = metrics.get("command") in ("pretrain", "finetune")  # what this command itself trained, and how

    def with_args(name, args) -> str | None:
        return None if name is None else name + (f" ({', '.join(f'{k}={v}' for k, v in args.items())})"
                                                 if args else "")

    facts = [("data", cfg.get("data")), ("backbone", cfg.get("backbone")), ("image size", cfg.get("image_size")),
             ("method", with_args(cfg.get("method"), cfg.get("method_args")) if trained else None),
             ("augmentation", with_args(cfg.get("augment"), cfg.get("augment_args")) if trained else None),
             ("training", _training_line(train, cfg.get("batch_size")) if "steps" in train else None),
             ("checkpoint", metrics.get("checkpoint")), ("written", time.strftime("%Y-%m-%d %H:%M")),
             ("vissl-lite", f"{env.get('vissl_lite')} (git {env.get('git_sha')})"),
             ("torch / timm", f"{env.get('torch')} / {env.get('timm')}"),
             ("device", env.get("cuda_device") or f"CPU, {env.get('torch_threads')} threads")]
    lines += [f"- **{k}:** {v}" for k, v in facts if v is not None] + [""]
    if "skipped" in ev:
        lines += [f"Evaluation skipped: {ev['skipped']}", ""]
    skipped = {f"{'kNN' if k.startswith('knn') else k.split('_random')[0].replace('_', ' ')} skipped: {r['skipped']}."
               for k, r in ev.items() if isinstance(r, dict) and "skipped" in r}  # kNN on multi-label data
    lines += [line for s in sorted(skipped) for line in (s, "")]
    if rows:
        lines += ["## Results (test split)", "", results_table(rows)]
        png = plot_label_efficiency(rows, out / "label_efficiency.png", Path(str(cfg.get("data"))).name)
        if png:
            lines += ["## Label efficiency", "", f"![label efficiency]({rel(png)})", ""]
    main = _main_result(ev)
    if main and "confusion_matrix" in main[2]:
        key, result, full = main
        regime = result.get("label_regime", {}).get("name", "")
        title = f"{key}, {result.get('init', 'ssl')} init, {regime} labels, test (seed {cfg.get('seed')})"
        png = plot_confusion(full["confusion_matrix"], out / "confusion_matrix.png", names, title)
        lines += ["## Confusion matrix", "", f"{title}.", "", f"![confusion matrix]({rel(png)})", ""]
    if main and "auroc_per_label" in main[2]:
        per = main[2]["auroc_per_label"]
        lines += ["## Per-label test AUROC", "", "| label | AUROC |", "|---|---|"]
        lines += [f"| {names[i] if names and i < len(names) else i} | {'–' if a is None else f'{a:.2f}'} |"
                  for i, a in enumerate(per)] + [""]
    if features:
        png = plot_embedding(features, out / "embedding.png", names)
        source = ("the fine-tuned models' test features" if metrics.get("command") == "finetune" else
                  "the frozen test features")
        lines += ["## Test features in 2-D", "", f"First two principal components of {source}, coloured by class.",
                  "", f"![embedding]({rel(png)})", ""]
    curves = []
    if train_curves is not None and Path(train_curves).is_file():
        curves.append(("pretraining (loss, lr, method scalars, online kNN if on)", Path(train_curves)))
    if finetune_logs:
        png = plot_finetune_curves(finetune_logs, out / "finetune_curves.png")
        if png:
            curves.append(("fine-tuning (first seed of each run)", png))
    if curves:
        lines += ["## Training curves", ""]
        for label, png in curves:
            lines += [f"{label}:", "", f"![{label}]({rel(png)})", ""]
    recon = metrics.get("reconstructions")
    if recon and Path(recon).is_file():  # MAE / DAE: what the model makes of images it was not shown whole
        lines += ["## Reconstructions", "", "Rows: the original, the input as the model sees it (masked or noised), "
                  "the model's output; the first eight test images (training images where there is no test split).",
                  "", f"![reconstructions]({rel(Path(recon))})", ""]
    protocols = {}
    for key, value in ev.items():
        if isinstance(value, dict) and "protocol" in value:
            protocols.setdefault(key.split("_random_init")[0].split("_scratch")[0], value["protocol"])
    if protocols:
        lines += ["## Protocols", ""] + [f"- **{k}:** {v}" for k, v in protocols.items()] + [""]
    lines += ["All numbers, the full config and the environment are in `metrics.json`.", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
