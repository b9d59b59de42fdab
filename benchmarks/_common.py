"""Shared by the benchmark scripts: the environment block every JSON result carries, and summary.json updates."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

# where results are written and read back; VISSL_LITE_RESULTS points a check run (gpu_suite.sh's QUICK) elsewhere
RESULTS = Path(os.environ.get("VISSL_LITE_RESULTS") or Path(__file__).parent / "results")
# the datasets folder: $VISSL_LITE_DATA, else ../shared/data beside the checkout (this project's layout)
SHARED_DATA = Path(os.environ.get("VISSL_LITE_DATA") or Path(__file__).resolve().parents[2] / "shared/data")


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = _cpuinfo()
    family = f", family {info['cpu family']} model {info['model']}" if "cpu family" in info and "model" in info else ""
    return f"{_cpu_model()} ({platform.machine()}{family}) CPU, {os.cpu_count()} cores{_memory()}"


@functools.cache
def _cpuinfo() -> dict:
    """The first processor's block of /proc/cpuinfo ({} where there is none), read once per process."""
    try:
        text = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if k.strip()}


def _cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (platform.processor() is empty on Linux). VMs may all say 'AMD EPYC', so
    :func:`machine` adds the family and model (e.g. 25 for Zen 3/4, 26 for Zen 5) to tell them apart."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def cpu_features() -> dict:
    """What decides CPU kernel speed: torch's vector ISA and the matrix/bf16 extensions the CPU reports."""
    flags = set(_cpuinfo().get("flags", "").split())
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16")}}


def _memory() -> str:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])  # MemTotal
        return f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return ""


def git_sha() -> str | None:
    """The checkout's short SHA, "+dirty" when the code has uncommitted changes; None without git or a .git."""
    try:
        here = Path(__file__).parent
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=here).stdout.strip() or None
        # the whole tree (the package is what most benchmarks time), less the results files a benchmark writes (a
        # second run in the same tree is not "dirty" code) and prose (a README being written up beside a run)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)benchmarks/results", ":(top,exclude,glob)**/*.md"],
                               capture_output=True, text=True, cwd=here).stdout.strip()
        return f"{sha}+dirty" if sha and dirty else sha
    except OSError:
        return None


def environment(device: torch.device, packages: tuple[str, ...] = ()) -> dict:
    """Hardware, versions and git SHA (with a "+dirty" mark when the tree has uncommitted changes)."""
    import importlib

    # a copy of the tree without .git (a lent GPU machine): gpu_prepare.sh wrote the SHA down before it travelled
    sha = git_sha() or os.environ.get("VISSL_LITE_GIT_SHA") or None
    env = {"machine": machine(device), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
           "torch": torch.__version__, "git_sha": sha}
    if device.type == "cpu":
        env["cpu_features"] = cpu_features()
    for name in ("torchvision", "timm", "kornia", *packages):
        try:
            env[name] = importlib.import_module(name).__version__
        except ImportError:
            env[name] = None
    return env


def update_summary(entries: dict) -> Path:
    """Merge ``entries`` into benchmarks/results/summary.json (other scripts' keys are kept)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(entries)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def load_cifar(n: int, path: Path | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` CIFAR-10 train images as uint8 (n, 3, 32, 32), their labels and where they came from. When
    the file is absent (a clone without the datasets folder) the built-in shapes set stands in, with a warning:
    the source goes into each result's config, so a number measured on shapes is never read as a CIFAR one."""
    import sys

    import numpy as np

    path = Path(path or SHARED_DATA / "cifar10/cifar10.npz")
    if path.is_file():
        with np.load(path) as f:
            x = torch.from_numpy(f["train_images"][:n]).permute(0, 3, 1, 2).contiguous()
            y = torch.from_numpy(f["train_labels"][:n].reshape(-1).astype("int64"))
        return x, y, f"cifar10 ({path.name}, train images from the first)"
    print(f"WARNING: {path} not found, so these numbers are on the built-in shapes set, not CIFAR-10; point "
          "VISSL_LITE_DATA at the datasets folder (or pass --data) to measure CIFAR-10", file=sys.stderr)
    from vissl_lite.data import load_split

    data = load_split("shapes", "train", 32, progress=False)
    reps = -(-n // len(data))
    return data.images.repeat(reps, 1, 1, 1)[:n], data.labels.repeat(reps)[:n], "shapes (CIFAR-10 file not found)"
