"""A run folder and its checkpoint: build the model a config describes, save atomically, load safely.

Checkpoint layout: ``{"model", "optimizer", "step", "config", "rng", "version", "world_size"}`` (plus ``"scaler"``,
the loss scaler's state, for fp16 runs, and ``"rng_ranks"``, each process's random state, for multi-process runs),
plain tensors and Python containers only, so it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import pickle
import platform
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vissl_lite import __version__, dist
from vissl_lite.backbones import create_backbone
from vissl_lite.config import RunConfig, config_from_dict
from vissl_lite.methods import build_method

CHECKPOINT = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, unsafe to unpickle, not vissl-lite's, or from an incompatible
    version); the message names the file and what to do instead."""


class DeviceError(ValueError):
    """A ``--device`` this machine does not have."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"--device {name!r} is not a device torch knows ({str(e).splitlines()[0]}); use cpu, "
                          "cuda, cuda:N, mps or auto") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name} was asked for, but torch sees no CUDA device; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps was asked for, but this torch build or machine has no MPS (Apple GPU); use "
                          "--device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: vissl-lite runs on cpu, cuda or mps")
    return device


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory(device: torch.device):
    """While training on the CPU under glibc: serve every allocation from the process heap and keep freed memory
    there, instead of mapping each large tensor fresh from the OS and unmapping it when freed.

    glibc maps any block over its mmap threshold (32 MB at most) with its own mmap and unmaps it on free, so every
    step's large activations (ResNet-18 at 32 px, 256 views: 67 MB each) are page-faulted in anew, 4 KB at a time:
    about 430,000 page faults (1.7 GB) per step, 11-12% of the step's time on 2 CPU cores. With mmap off and the heap
    never trimmed, the second step reuses the first step's pages. The cost is memory: the process keeps its peak
    heap until the context exits (peak RSS 2.3 -> 2.8-3.1 GB for that job, freed blocks of different sizes not
    always reused). On exit mmap comes back (at glibc's largest threshold, 32 MB, where its dynamic threshold settles
    once big tensors are freed) and the heap is trimmed.

    Does nothing (yields False) off the CPU, off glibc, when any ``MALLOC_*`` variable is set (the user tunes glibc
    themselves), or with ``VISSL_LITE_KEEP_FREED_MEMORY=0``.
    """
    libc = None if device.type != "cpu" else _glibc()
    if (libc is None or os.environ.get("VISSL_LITE_KEEP_FREED_MEMORY", "1") == "0"
            or any(k.startswith("MALLOC_") for k in os.environ)):
        yield False
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
        libc.mallopt(_M_MMAP_MAX, 65536)
        libc.malloc_trim(0)


def use_channels_last(model: nn.Module) -> bool:
    """Whether ``model`` is a conv net (more than one Conv2d; a ViT has only its patch embedding). oneDNN on CPU and
    cuDNN on GPU run convolutions and BatchNorm faster on channels-last tensors: profiled at 32 px on 2 CPU cores,
    ResNet-18 forward + backward took 1.27x less time (benchmarks/pretrain_throughput.py)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put a conv net's weights in channels-last layout (the values are unchanged); other models as they are.
    Call before wrapping in DDP; the training loop then feeds it channels-last views."""
    return model.to(memory_format=torch.channels_last) if use_channels_last(model) else model


def build_backbone(cfg: RunConfig, in_chans: int) -> nn.Module:
    extra = {"drop_path_rate": cfg.drop_path} if cfg.drop_path > 0 else {}
    return create_backbone(cfg.backbone, in_chans=in_chans, img_size=cfg.image_size, small_input=cfg.small_input,
                           patch_size=cfg.patch_size, **extra)


def build_model(cfg: RunConfig, in_chans: int) -> nn.Module:
    """Backbone + method exactly as ``cfg`` describes, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return build_method(cfg.method, build_backbone(cfg, in_chans), **cfg.method_args)


def check_fits(model: nn.Module, channels: int, image_size: int) -> None:
    """One forward of two blank images through ``model`` in eval mode, without gradients and with the random
    state put back: a ValueError naming the backbone and image size when they do not fit (e.g. a backbone whose
    downsampling leaves nothing of 28 px images), before any training step. Changes no weight, statistic or
    random stream, so it is safe before a resume."""
    device = next(model.parameters()).device
    x = torch.zeros(2, channels, image_size, image_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if hasattr(model, "logits"):  # the classifier: backbone and head, no labels needed
                model.logits(x)
            else:
                model([x] * getattr(model, "views", 1))
    except (RuntimeError, ValueError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = getattr(model.backbone, "default_cfg", {}).get("architecture") or type(model.backbone).__name__
        raise ValueError(f"backbone {name} does not run on {channels}-channel {image_size}x{image_size} images "
                         f"({first}). Use a larger --image-size, a backbone that downsamples less (for small "
                         "images e.g. resnet18, whose small-input stem keeps 28-64 px), or other method_args") from e
    finally:
        model.train(was_training)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_rank(seed: int, rank: int) -> None:
    """A random stream of its own for process ``rank`` > 0 of a multi-process run (its crops, jitter, masks and
    noise), derived from ``seed``; rank 0 keeps the stream a single process has, so one process is unchanged."""
    if rank:
        derived = (seed * 1_000_003 + rank) % 2**63
        torch.manual_seed(derived)
        random.seed(derived)
        np.random.seed(derived % 2**32)


def rng_states_of_every_rank() -> list[dict] | None:
    """Every process's random state, gathered (all ranks must call it); None in a single process."""
    if not dist.is_distributed():
        return None
    import torch.distributed as tdist

    states: list = [None] * dist.world_size()
    tdist.all_gather_object(states, rng_state())
    return states


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
                    cfg: RunConfig, keep: int = 1, scaler: torch.amp.GradScaler | None = None,
                    meta: dict | None = None, rngs: list[dict] | None = None) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves a half-written file
    under the real name. ``keep`` > 1 also keeps ``<stem>-<step>.pt`` snapshots of the last ``keep`` saves (hard
    links to the same data where the file system allows, so the newest costs no extra space). An enabled fp16
    ``scaler`` is saved too: a resume that restarted its scale would skip steps the uninterrupted run takes.
    ``meta``: more entries for the payload; pretraining's are its training seconds so far, its resume history and
    ``window``, the (lo, hi) that ``--window dataset`` resolved to on the training files, which every later use of
    the run reuses (see :func:`saved_config`). ``rngs``: every process's random state in a multi-process run
    (:func:`rng_states_of_every_rank`), so each rank resumes its own stream; the process count is saved too, since a
    resume with another count would change the global batch and the schedule."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "step": step,
        "config": cfg.to_dict(),
        "rng": rngs[0] if rngs else rng_state(),
        "version": __version__,
        "world_size": dist.world_size(),
    }
    if rngs:
        payload["rng_ranks"] = rngs
    if scaler is not None and scaler.is_enabled():
        payload["scaler"] = scaler.state_dict()
    payload |= meta or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (OSError, RuntimeError)):
            # torch.save reports a full disk as a RuntimeError about stream positions
            raise CheckpointError(f"could not write the checkpoint {path} ({type(e).__name__}: {e}); the previous "
                                  "checkpoint there is unchanged. Is the disk full or the folder read-only?") from e
        raise
    if keep > 1:
        _snapshot(path, step, keep)


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a state dict's names, dtypes, shapes and values: equal weights give equal fingerprints
    wherever the file lives (what fine-tuning's --resume compares to know its sub-runs started from these)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files :func:`save_checkpoint` leaves when its process is killed mid-write (SIGKILL,
    power loss): the real checkpoint is never one of them. Call it only where no other process writes to
    ``folder`` (a run's rank 0, at start). Returns what was removed."""
    stale = sorted(Path(folder).glob(f".{CHECKPOINT}.*.tmp")) if Path(folder).is_dir() else []
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def _snapshot(path: Path, step: int, keep: int) -> None:
    snap = path.with_name(f"{path.stem}-{step:08d}{path.suffix}")
    snap.unlink(missing_ok=True)
    try:
        os.link(path, snap)
    except OSError:  # no hard links here: copy
        import shutil

        shutil.copyfile(path, snap)
    for old in sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))[:-keep]:
        old.unlink()


def check_out_folder(out: str | Path, command: str) -> None:
    """A FileExistsError when ``out`` holds another command's results, which writing ``command``'s metrics.json
    and report.md there would overwrite: a pretraining run (its checkpoint), or a metrics.json that another command
    wrote. The same command's earlier result is not checked here (each command decides: a re-probe replaces it,
    fine-tuning and transfer ask for --resume)."""
    out = Path(out)
    if command != "transfer" and (out / "transfer_settings.json").is_file():
        raise FileExistsError(f"--out {out} is a transfer folder (it holds transfer_settings.json), whose steps and "
                              f"report this {command} would mix with its own; choose another --out")
    if command != "pretrain" and (out / CHECKPOINT).is_file():
        inside = f" (the default is a {command} folder inside the run)" if command != "transfer" else ""
        raise FileExistsError(f"--out {out} is a pretraining run (it holds {CHECKPOINT}), and its metrics.json and "
                              f"report.md are that run's; choose another --out{inside}")
    try:
        other = json.loads((out / "metrics.json").read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return
    if other and other != command:
        raise FileExistsError(f"--out {out} already holds a '{other}' result (metrics.json, report.md) that this "
                              f"{command} would overwrite; choose another --out")


def check_split_fraction(run: str | Path, saved: dict, data: str | None, val_fraction) -> None:
    """Refuse a ``--val-fraction`` other than the run's when evaluating on the run's own pretraining data: the
    fraction decides which images are carved from train as val (and, for data without a test split, test), so
    another one would put images the backbone was pretrained on into them."""
    from vissl_lite.config import ConfigError
    from vissl_lite.data.datasets import carves_splits, same_data

    then = saved.get("val_fraction", 0.1)
    try:
        if val_fraction is None or float(val_fraction) == float(then):
            return
    except ValueError:  # not a number: the config's own validation names it
        return
    same = data is None or same_data(str(data), str(saved.get("data")))
    if same and carves_splits(str(saved.get("data"))):
        raise ConfigError(f"--val-fraction {val_fraction}: {run} was pretrained on {saved.get('data')} with "
                          f"--val-fraction {then}, which decides the images carved from its train split for "
                          "validation (and test, where the data has no test split); another fraction would put "
                          "images the backbone was pretrained on into them. Leave --val-fraction out")


def check_split_rule(run: str | Path, ckpt: dict, data: str | None) -> None:
    """Refuse to evaluate a run on its own pretraining data when the run was trained before a labeled array set
    without test arrays had test carved from train (split rule 1): it trained on every image outside val, so the
    test split carved now would score images the backbone was pretrained on."""
    from vissl_lite.config import ConfigError
    from vissl_lite.data.datasets import SPLIT_RULE, arrays_carve_test, same_data

    own = ckpt["config"].get("data")
    if ckpt.get("split_rule", 1) >= SPLIT_RULE or not own or (data is not None and not same_data(str(data), own)):
        return
    if arrays_carve_test(own):
        raise ConfigError(f"{run} was pretrained on {own} by an older vissl-lite, which carved no test split from "
                          "its training arrays; this version carves one, from images the backbone was pretrained "
                          "on. Pretrain again, or evaluate on other labeled data (--data)")


def check_window(run: str | Path, ckpt: dict, window, what: str, instead: str) -> None:
    """Refuse a ``--window`` that maps data otherwise than the run's pretraining did (its own value, or for
    'dataset' the range it resolved): the backbone learned the data as that window mapped it, so ``what`` (the
    evaluations or fine-tuning) maps it the same way; ``instead`` says what to do for another window."""
    from vissl_lite.config import ConfigError
    from vissl_lite.data.decode import parse_window

    given, resolved = ckpt["config"].get("window", "auto"), saved_config(ckpt).get("window", "auto")
    if parse_window(window) in {parse_window(given), parse_window(resolved)}:
        return
    shown = given + (f" ({resolved})" if resolved != given else "")
    raise ConfigError(f"--window {window}: {run} was pretrained with --window {shown}, and {what} the data the "
                      f"same way; leave --window out (or {instead})")


def find_checkpoint(run: str | Path) -> Path:
    """A run folder (its checkpoint.pt) or a checkpoint file."""
    p = Path(run)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}; pass a run folder written by 'vissl-lite pretrain' or its "
                                f"{CHECKPOINT}")
    return p


def _snapshot_hint(path: Path) -> str:
    """Where to turn when ``path`` is unreadable: the run's step snapshots (``--keep-checkpoints``), if any."""
    snaps = sorted(p for p in path.parent.glob(f"{path.stem}-*{path.suffix}")
                   if not os.path.samefile(p, path))  # the newest is a hard link to path: the same broken bytes
    if not snaps:
        return ""
    return (f" Step snapshots in {path.parent}: {', '.join(p.name for p in snaps[-3:])}; pass one as --checkpoint, "
            f"or copy the newest over {path.name} to resume from it.")


def load_checkpoint(run: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with ``weights_only=True``; a file that needs arbitrary unpickling is refused."""
    path = find_checkpoint(run)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses a global it does not allow
        reason = " ".join(str(e).split())[:300]  # torch's unpickler messages span lines
        raise CheckpointError(f"cannot load checkpoint {path} safely ({type(e).__name__}: {reason}). "
                              "It needs arbitrary unpickling, which vissl-lite refuses: it was not written by "
                              f"vissl-lite, or has been altered.{_snapshot_hint(path)}") from e
    except Exception as e:  # RuntimeError for a zip cut short or corrupt, EOFError, OSError
        reason = " ".join(str(e).split()).split(". ")[0][:200]  # torch's first sentence says what failed
        hint = _snapshot_hint(path) or " Without a step snapshot (--keep-checkpoints) train again into a new --out."
        raise CheckpointError(f"checkpoint {path} is corrupt or cut short ({type(e).__name__}: {reason}). vissl-lite "
                              "writes checkpoints atomically, so the file was most likely damaged by an incomplete "
                              f"copy or a full disk: copy it again if you have it elsewhere.{hint}") from e
    missing = {"model", "step", "config"} - set(ckpt) if isinstance(ckpt, dict) else {"model", "step", "config"}
    if missing:
        raise CheckpointError(f"{path} is not a vissl-lite checkpoint (missing {', '.join(sorted(missing))})")
    return ckpt


def load_run(run: str | Path, device: torch.device | str = "cpu") -> tuple[RunConfig, nn.Module, dict]:
    """(config, model with the checkpoint's weights, raw checkpoint)."""
    ckpt = load_checkpoint(run)
    cfg = config_from_dict(saved_config(ckpt))
    state = ckpt["model"]
    if legacy_projector(cfg, state):
        cfg.method_args = {**cfg.method_args, "proj_out_bn": False}
    model = build_model(cfg, in_chans=checkpoint_in_chans(ckpt, run))
    model.load_state_dict(state)
    return cfg, model.to(device), ckpt


def checkpoint_in_chans(ckpt: dict, run: str | Path) -> int:
    """The channels the checkpoint's backbone takes: its first convolution's input channels."""
    first_conv = next((v for k, v in ckpt["model"].items() if k.startswith("backbone.") and v.ndim == 4), None)
    if first_conv is None:
        raise CheckpointError(f"cannot find the backbone's first convolution in {find_checkpoint(run)}")
    return int(first_conv.shape[1])


def saved_config(ckpt: dict) -> dict:
    """The run's config as evaluation and fine-tuning use it: ``window: dataset`` becomes the (lo, hi) pretraining
    computed on its own training files, so other data (a labeled set, a transfer target) is mapped to 8 bits the
    way the backbone saw during pretraining rather than by its own percentiles."""
    cfg = dict(ckpt["config"])
    if cfg.get("window") == "dataset" and ckpt.get("window"):
        cfg["window"] = ",".join(repr(float(v)) for v in ckpt["window"])  # the 'LO,HI' form, exact
    return cfg


def legacy_projector(cfg: RunConfig, state: dict) -> bool:
    """Whether ``state`` is a SimCLR model saved before its projection head gained the output BatchNorm (its
    config does not say ``proj_out_bn`` and the head's last layer has a bias instead of BN statistics)."""
    if cfg.method != "simclr" or "proj_out_bn" in cfg.method_args:
        return False
    layers = [int(k.split(".")[1]) for k in state if k.startswith("projector.")]
    return bool(layers) and f"projector.{max(layers)}.running_var" not in state


def environment() -> dict:
    """Versions and hardware, stored with every metrics.json."""
    import kornia
    import timm
    import torchvision

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {
        "vissl_lite": __version__, "git_sha": sha or None, "python": platform.python_version(),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
        "kornia": kornia.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
