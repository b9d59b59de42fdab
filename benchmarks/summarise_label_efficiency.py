"""Collect the tables that medmnist_label_efficiency.sh produced into one JSON file and a markdown table.

    python benchmarks/summarise_label_efficiency.py runs/label_efficiency > table.md
Writes benchmarks/results/label_efficiency.json (rows of every set, protocol, init and label regime, with the
machine they ran on) and docs/label_efficiency_<set>.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

INIT = {"ssl": "SSL", "checkpoint": "SSL", "random_init": "random init", "scratch": "scratch"}


def collect(root: Path) -> dict:
    sets = {}
    for data in sorted(p for p in root.iterdir() if (p / "metrics.json").is_file()):  # finished pretraining runs
        rows, env, timing = [], None, {}
        for command in ("linear_probe", "knn", "finetune"):
            path = data / command / "metrics.json"
            if not path.is_file():
                continue
            m = json.loads(path.read_text())
            env = env or m["environment"]
            timing[command] = m["timing"]["total_s"]
            rows += [r for r in m["eval"]["table"] if r["protocol"] in ("linear_probe", "knn k=20", "finetune")]
        pre = json.loads((data / "metrics.json").read_text())
        timing["pretrain"] = pre["timing"]["pretrain_s"]
        sets[data.name] = {"rows": rows, "environment": env, "seconds": timing,
                           "pretraining": {k: pre["config"][k] for k in ("method", "backbone", "epochs", "image_size",
                                                                           "batch_size")}}
    return sets


def _seeds(s: dict) -> str:
    found = sorted({r["seeds"] for r in s["rows"]})
    return "/".join(map(str, found)) or "0"


def markdown(sets: dict) -> str:
    out = []
    for name, s in sets.items():
        regimes = sorted({(r["label_fraction"], r["regime"], r["n_train"]) for r in s["rows"]})
        out.append(f"**{name}** (test top-1 % / macro AUROC, mean ± std over {_seeds(s)} seeds)\n")
        out.append("| protocol | init | " + " | ".join(f"{g} ({n} labels)" for _, g, n in regimes) + " |")
        out.append("|---|---|" + "---|" * len(regimes))
        keys = []
        for r in s["rows"]:
            if (r["protocol"], r["init"]) not in keys:
                keys.append((r["protocol"], r["init"]))
        for protocol, init in keys:
            cells = []
            for frac, _, _ in regimes:
                r = next(r for r in s["rows"] if (r["protocol"], r["init"], r["label_fraction"]) == (protocol, init,
                                                                                                     frac))
                auc = f" / {r['auroc_mean']:.1f}" if "auroc_mean" in r else ""
                cells.append(f"{r['mean']:.2f} ± {r['std']:.2f}{auc}")
            out.append(f"| {protocol.replace('_', ' ')} | {INIT.get(init, init)} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", default="runs/label_efficiency",
                   help="the folder medmnist_label_efficiency.sh wrote, one subfolder per set [default: %(default)s]")
    root = Path(p.parse_args().root)
    if not root.is_dir():
        p.error(f"{root} is not a folder; run benchmarks/medmnist_label_efficiency.sh first, or pass its output folder")
    sets = collect(root)
    if not sets:  # never replace the committed results with nothing
        p.error(f"{root} holds no finished set (a subfolder with metrics.json from medmnist_label_efficiency.sh); "
                "nothing written")
    results = Path(__file__).parent / "results" / "label_efficiency.json"
    kept = json.loads(results.read_text()) if results.is_file() else {}
    others = sorted(set(kept) - set(sets))
    if others:  # sets this folder does not hold keep their committed rows
        print(f"keeping the committed results of {', '.join(others)} ({root} has no finished run of them)")
    results.write_text(json.dumps(kept | sets, indent=2))
    from vissl_lite.eval.report import plot_label_efficiency

    docs = Path(__file__).parents[1] / "docs"
    for name, s in sets.items():  # one figure per set: every protocol, SSL (solid) against baseline (dashed)
        plot_label_efficiency(s["rows"], docs / f"label_efficiency_{name}.png",
                              f"{name}: test top-1, mean ± std over {_seeds(s)} seeds")
    print(markdown(sets))


if __name__ == "__main__":
    main()
