"""Brings a GPU run's results home: the files gpu_suite.sh left in $OUT (results.tar.gz, summary_cuda.json) go into
benchmarks/results/, the headlines merged into summary.json (its other keys, the CPU's, are kept).

    python benchmarks/gpu_collect.py DIR   # DIR: the folder the device call's files came back to
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

from _common import RESULTS, update_summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, help="holds results.tar.gz and summary_cuda.json from gpu_suite.sh")
    args = p.parse_args()
    tar, summary = args.dir / "results.tar.gz", args.dir / "summary_cuda.json"
    if not tar.is_file() and not summary.is_file():
        raise SystemExit(f"{args.dir} has neither results.tar.gz nor summary_cuda.json: was it gpu_suite.sh's $OUT?")
    names = []
    if tar.is_file():
        with tarfile.open(tar) as t:
            members = [m for m in t.getmembers() if m.isfile() and "/" not in m.name and m.name.endswith(".json")]
            t.extractall(RESULTS, members=members, filter="data")
            names = [m.name for m in members]
    headlines = json.loads(summary.read_text()) if summary.is_file() else {}
    if headlines:
        update_summary(headlines)
    print(f"into {RESULTS}: {', '.join(names) or 'no result files'}; summary.json keys "
          f"{', '.join(headlines) or 'none'}")


if __name__ == "__main__":
    main()
