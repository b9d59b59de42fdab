"""The tables and report of ``vissl-lite transfer``: SSL against its random-init baseline for each protocol and
label regime (with a verdict against seed noise), the MedMNIST-style ACC/AUC table, report.md and the printed
summary. Reads only the rows and metrics that :func:`vissl_lite.eval.transfer.transfer` collects.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vissl_lite.config import atomic_write_text
from vissl_lite.data import data_name
from vissl_lite.eval.report import init_name, knn_clamp_note, protocol_name

# The MedMNIST v2 paper's ResNet-18 (28) test ACC / AUC (Yang et al., Scientific Data 2023, Table 3), all labels,
# 100 epochs from scratch at 28 px: a reference line for the report when the data is one of these sets.
MEDMNIST_RESNET18_28 = {"pneumoniamnist": (85.4, 94.4), "retinamnist": (52.4, 71.7), "breastmnist": (86.3, 90.1)}

BASELINE = {"ssl": "random_init", "checkpoint": "scratch", "weights": None}


def compare(rows: list[dict]) -> list[dict]:
    """SSL against its random-init baseline for each (protocol, regime): the difference in ACC and AUC and a
    verdict. 'better' / 'worse' need the gap to exceed both settings' seed std combined (sqrt(s1^2 + s2^2));
    otherwise 'within noise'. One seed, or seeds that all gave the same value on both sides (kNN on every label
    has nothing random), leave no noise to compare with: the sign alone, marked ', single seed' or
    ', no seed spread'. ``one_class`` is set when the SSL model gave every test image the same class on every
    seed: its ACC is then the majority class's share, whatever the gap."""
    index = {(r["protocol"], r["init"], r["regime"]): r for r in rows}
    found = []
    for (protocol, init, regime), ssl in index.items():
        base = index.get((protocol, BASELINE.get(init), regime))
        if base is None:
            continue
        entry = {"protocol": protocol, "regime": regime, "n_train": ssl["n_train"], "metric": ssl["metric"]}
        for key, mean, std in _compared(ssl["metric"]):
            if mean not in ssl or mean not in base:
                continue
            gap = ssl[mean] - base[mean]
            noise = float(np.hypot(ssl[std], base[std]))
            sign = "better" if gap > 0 else "worse" if gap < 0 else "equal"
            if ssl["seeds"] < 2:
                verdict = f"{sign}, single seed"
            elif noise == 0:
                verdict = f"{sign}, no seed spread"
            else:
                verdict = "better" if gap > noise else "worse" if -gap > noise else "within noise"
            entry[key] = {"delta": round(gap, 2), "noise": round(noise, 2), "verdict": verdict}
        if ssl.get("one_class_seeds") and ssl["one_class_seeds"] == ssl["seeds"]:
            entry["one_class"] = True
        found.append(entry)
    return found


def _compared(metric: str) -> tuple[tuple[str, str, str], ...]:
    """(comparison key, row mean, row std) of the two numbers compared: ACC and AUC for single-label rows; for
    multi-label rows (``metric`` 'auroc_mean', no top-1) the mean AUROC and mAP."""
    if metric == "top1":
        return ("acc", "mean", "std"), ("auc", "auroc_mean", "auroc_std")
    return ("auc", "mean", "std"), ("map", "map_mean", "map_std")


HEADLINE = {"top1": ("ACC", "AUC"), "auroc_mean": ("mean AUC", "mAP")}  # the names of _compared's two numbers


def _metric(rows: list[dict]) -> str:
    """'top1' for single-label rows (or none), 'auroc_mean' for multi-label rows, which have no top-1."""
    return "top1" if not rows or any(r["metric"] == "top1" for r in rows) else "auroc_mean"


def ssl_wins(comparison: list[dict]) -> tuple[list[str], list[str]]:
    """Names of the (protocol, regime) settings where SSL beats random init: ACC (multi-label: mean AUC) better
    beyond seed noise, AUC not worse beyond it, and not a one-class model; and of those where ACC says better but
    AUC or a one-class model disagrees."""
    wins, mixed = [], []
    for c in comparison:
        first = _compared(c["metric"])[0][0]
        if c.get(first, {}).get("verdict") != "better":
            continue
        name = f"{protocol_name(c['protocol'])} {c['regime']}"
        why = ("predicts one class" if c.get("one_class") else
               "AUC worse" if first == "acc" and c.get("auc", {}).get("verdict") == "worse" else "")
        (mixed if why else wins).append(f"{name} ({why})" if why else name)
    return wins, mixed


def ssl_ahead_unjudged(comparison: list[dict]) -> list[str]:
    """The settings where SSL's ACC (multi-label: mean AUC) is higher than random init's but there is no seed noise
    to judge the gap against (one seed, or seeds that all gave the same value), each with its gap: neither a win
    nor nothing, so the console names them instead of leaving them out of 'SSL beats random init in'."""
    found = []
    for c in comparison:
        first = _compared(c["metric"])[0][0]
        entry = c.get(first, {})
        if entry.get("verdict", "").startswith("better,"):
            why = [entry["verdict"].split(", ", 1)[1]]
            if c.get("one_class"):  # what ssl_wins says of such a model: its ACC is the majority class's share
                why.append("predicts one class")
            elif first == "acc" and c.get("auc", {}).get("verdict", "").startswith("worse"):
                why.append("AUC lower")
            found.append(f"{protocol_name(c['protocol'])} {c['regime']} ({_signed(entry['delta'])}, {', '.join(why)})")
    return found


def _signed(x: float) -> str:
    """``x`` to one decimal with its sign; a gap that rounds to zero is '0.0', not '-0.0'."""
    text = f"{x:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def _cell(row: dict | None, mean: str, std: str) -> str:
    if row is None or mean not in row:
        return "–"
    return f"{row[mean]:.1f} ± {row[std]:.1f}" if row["seeds"] > 1 else f"{row[mean]:.1f}"


def medmnist_table(rows: list[dict]) -> str:
    """Markdown in the MedMNIST style: one row per (protocol, init), for every label regime an ACC and an AUC
    column (test, %, mean ± std over seeds). Multi-label data: mean AUROC over the labels and mAP."""
    first: dict[str, int] = {}
    for r in rows:
        first.setdefault(r["regime"], r["n_train"])
    regimes = sorted((n, name) for name, n in first.items())
    order = []
    for r in rows:
        key = (r["protocol"], r["init"])
        if key not in order:
            order.append(key)
    by = {(r["protocol"], r["init"], r["regime"]): r for r in rows}
    metric = _metric(rows)
    first, second = HEADLINE[metric]
    (_, *pair1), (_, *pair2) = _compared(metric)
    head = "| protocol | init | " + " | ".join(f"{first} {name} ({n}) | {second} {name}" for n, name in regimes) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(regimes))]
    for protocol, init in order:
        cells = []
        for _, name in regimes:
            row = by.get((protocol, init, name))
            cells += [_cell(row, *pair1), _cell(row, *pair2)]
        lines.append(f"| {protocol_name(protocol)} | {init_name(init)} | " + " | ".join(cells) + " |")
    note = knn_clamp_note(rows)
    return "\n".join(lines) + "\n" + (f"\n{note}" if note else "")


def _auc_rows(rows: list[dict]) -> list[dict]:
    """Rows with AUC as their mean: single-label rows' AUROC, multi-label rows (their mean is the mean AUROC)."""
    return [r | {"mean": r["auroc_mean"], "std": r["auroc_std"], "metric": "auroc_macro"} if "auroc_mean" in r
            else r for r in rows if "auroc_mean" in r or r["metric"] == "auroc_mean"]


def _length_text(cfg: dict, step: int | None) -> str:
    """The steps the checkpoint trained, with the schedule that set them (an epoch count may stop before
    --max-steps)."""
    schedule = ", ".join([f"{cfg.get('epochs')} epochs"] * bool(cfg.get("epochs"))
                         + [f"--max-steps {cfg.get('max_steps')}"] * bool(cfg.get("max_steps")))
    if step is None:
        return schedule
    return f"{step} steps" + (f" ({schedule})" if schedule else "")


def _window_text(window) -> str:
    if isinstance(window, (list, tuple)):
        return f"{window[0]:g} to {window[1]:g} mapped to 0-255"
    return f"--window {window}"


def write_transfer_report(out: Path, metrics: dict) -> Path:
    from vissl_lite.eval.report import plot_label_efficiency

    rows = metrics["eval"]["table"]
    cfg = metrics["config"]
    env = metrics["environment"]
    reused = metrics["timing"].get("reused_steps")
    name = data_name(metrics["data"])
    device = env.get("cuda_device") or f"CPU, {env.get('torch_threads')} threads"
    lines = [f"# vissl-lite transfer: {name}", "",
             f"- **downstream data:** {metrics['data']}",
             f"- **pretraining:** {cfg['method']} ({cfg['augment']} augmentation), {cfg['backbone']}, "
             f"{cfg['image_size']} px, " + _length_text(cfg, metrics.get("checkpoint_step"))
             + f" on {cfg['data']}"
             + (f", started from {cfg['init_weights']}" if cfg.get("init_weights") else ""),
             *([f"- **supplied weights** (--init-weights, evaluated as a further initialisation): "
                f"{metrics['init_weights']}"] if metrics.get("init_weights") else []),
             f"- **checkpoint:** {metrics['checkpoint']}",
             *([f"- **window** (files with more than 8 bits, every step): {_window_text(metrics['window'])}"]
               if metrics.get("window", "auto") != "auto" else []),
             f"- **environment:** torch {env.get('torch')}, timm {env.get('timm')}, "
             f"{device}; vissl-lite "
             f"{env.get('vissl_lite')} (git {env.get('git_sha')})",
             f"- **time:** {metrics['timing']['total_s'] / 60:.1f} min"
             + (f" (this invocation; reused from an earlier one: {', '.join(reused)})" if reused else ""), ""]
    metric = _metric(rows)
    first, second = HEADLINE[metric]
    lines += ["## Results (test split, %)", "",
              ("ACC is top-1 accuracy, AUC the macro one-vs-rest AUROC (for two classes: the AUROC), as in MedMNIST. "
               if first == "ACC" else "Multi-label data: mean AUC is each label's AUROC averaged over the labels, "
               "mAP each label's average precision averaged (per-label tables in the steps' reports). ")
              + "Columns: share of the training labels used (labeled images in brackets). "
              + ("Mean ± std (sample std, n - 1) over seeds; each seed draws its own label subset and head."
                 if any(r["seeds"] > 1 for r in rows) else "One seed: no spread to show."),
              "", medmnist_table(rows)]
    paper = MEDMNIST_RESNET18_28.get(name.split("_")[0])
    if paper:
        lines += [f"For reference, the MedMNIST v2 paper's ResNet-18 (28) gets ACC {paper[0]} / AUC {paper[1]} "
                  "on this set (all labels, 100 epochs from scratch, 28 px).", ""]
    comparison = metrics["eval"]["comparison"]
    if comparison:
        lines += ["## Does SSL beat random initialisation?", "",
                  "SSL minus the random-init baseline of the same protocol, in points. 'better' and 'worse' need "
                  "the gap to exceed the two settings' seed std combined; 'single seed' and 'no seed spread' "
                  "(every seed gave the same value, as kNN on all labels does: nothing in it is random) mark gaps "
                  "with no noise estimate to compare with. 'one class' marks an SSL model that gave every test "
                  "image the same class, whose ACC is the majority class's share.", "",
                  f"| protocol | labels | Δ{first} | Δ{second} |", "|---|---|---|---|"]
        keys = [k for k, _, _ in _compared(metric)]
        for c in comparison:
            notes = {k: c[k]["verdict"] for k in keys if k in c}
            if c.get("one_class") and "acc" in notes:
                notes["acc"] += "; SSL: one class"
            cells = [f"{_signed(c[k]['delta'])} ({notes[k]})" if k in c else "–" for k in keys]
            lines.append(f"| {protocol_name(c['protocol'])} | {c['regime']} ({c['n_train']}) | " + " | ".join(cells)
                         + " |")
        lines.append("")
    plots = []
    for label, subset, fname in (("ACC", [r for r in rows if r["metric"] == "top1"], "label_efficiency_acc.png"),
                                 ("AUC", _auc_rows(rows), "label_efficiency_auc.png")):
        png = plot_label_efficiency(subset, out / fname, f"{name}: test {label} against labeled images") \
            if subset else None
        if png:
            plots.append(f"![{label}]({fname})")
    if plots:
        lines += ["## Label efficiency", ""] + [p + "\n" for p in plots]
    texts = metrics.get("protocol_texts") or {}
    if texts:
        lines += ["## Protocols", ""] + [f"- **{protocol_name(k)}:** {v}" for k, v in texts.items()]
        if metrics.get("finetune_args") and "finetune" in texts:
            lines.append("- **fine-tuning overrides (--finetune-args):** "
                         + ", ".join(f"{k}={v}" for k, v in metrics["finetune_args"].items()))
        lines.append("")
    lines += ["## Steps", ""]
    for step, folder in metrics["steps"].items():
        lines.append(f"- **{step}:** [{os.path.relpath(Path(folder) / 'report.md', out)}]"
                     f"({os.path.relpath(Path(folder) / 'report.md', out)}) (protocols, confusion matrix, "
                     "embedding, curves)")
    lines += ["", "All numbers are in `metrics.json`; each step's full config is in its own metrics.json.", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def transfer_summary(metrics: dict) -> str:
    first, second = HEADLINE[_metric(metrics["eval"]["table"])]
    lines = [f"vissl-lite transfer: {data_name(metrics['data'])}, test {first} / {second} (%)"]
    for r in metrics["eval"]["table"]:
        other = "auroc_mean" if r["metric"] == "top1" else "map_mean"
        auc = f" / {r[other]:5.1f}" if other in r else ""
        std = f" ± {r['std']:.1f}" if r["seeds"] > 1 else ""
        lines.append(f"  {protocol_name(r['protocol']):<13} {init_name(r['init']):<22} "
                     f"{r['regime']:>6} ({r['n_train']:>5}): {r['mean']:5.1f}{std}{auc}")
    wins, mixed = ssl_wins(metrics["eval"]["comparison"])
    why = "ACC beyond seed noise, AUC not worse" if first == "ACC" else "mean AUC beyond seed noise"
    lines.append(f"  SSL beats random init ({why}) in: {', '.join(wins) or 'none'}")
    if mixed:
        lines.append(f"  ACC better but not a win: {', '.join(mixed)}")
    unjudged = ssl_ahead_unjudged(metrics["eval"]["comparison"])
    if unjudged:
        lines.append(f"  {first} higher with no seed noise to judge it by (more --seeds would): {', '.join(unjudged)}")
    return "\n".join(lines)

