"""Collect `vissl-lite transfer` results into benchmarks/results/transfer.json (the README's transfer table).

    python benchmarks/summarise_transfer.py RUNS_DIR SET [SET ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vissl_lite.eval.transfer_report import MEDMNIST_RESNET18_28, medmnist_table

ROOT = Path(__file__).resolve().parent


def main(runs: Path, names: list[str]) -> None:
    out = ROOT / "results" / "transfer.json"
    kept = json.loads(out.read_text())["sets"] if out.is_file() else {}
    result = {"description": "vissl-lite transfer per MedMNIST set: test ACC and macro AUROC (%), mean and std over "
                             "seeds, SSL vs random init, plus the MedMNIST v2 paper's ResNet-18 (28) for reference",
              "sets": dict(kept)}  # sets not named here keep their committed rows
    missing = [str(runs / n / "metrics.json") for n in names if not (runs / n / "metrics.json").is_file()]
    if missing:
        sys.exit(f"no finished transfer result at {', '.join(missing)}: run benchmarks/medmnist_transfer.sh (or "
                 "'vissl-lite transfer ... --out RUNS_DIR/SET') first; nothing written")
    for name in names:
        m = json.loads((runs / name / "metrics.json").read_text())
        pre_file = runs / name / "pretrain" / "metrics.json"  # absent for a transfer of an existing --checkpoint
        pre = json.loads(pre_file.read_text()) if pre_file.is_file() else None
        result["sets"][name] = {
            "pretraining": {k: m["config"][k] for k in ("method", "augment", "backbone", "image_size", "epochs")},
            "table": m["eval"]["table"], "comparison": m["eval"]["comparison"],
            "paper_resnet18_28_acc_auc": MEDMNIST_RESNET18_28.get(name),
            "seconds": {"pretrain": pre["timing"]["total_s"] if pre else None, "total": m["timing"]["total_s"]},
            "environment": m["environment"]}
        print(f"## {name}\n\n{medmnist_table(m['eval']['table'])}")
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="the folder holding one transfer --out per set (RUNS_DIR/SET)")
    parser.add_argument("sets", nargs="+", help="set names, e.g. pneumoniamnist retinamnist breastmnist")
    args = parser.parse_args()
    main(args.runs, args.sets)
