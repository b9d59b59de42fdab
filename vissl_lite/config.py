"""One flat, typed run configuration.

Precedence: dataclass defaults < YAML recipe (``--config NAME`` or a path) < command-line flags / keyword arguments.
Every field is also a ``--kebab-case`` flag. Unknown keys and bad values are errors that name the key and list what
is valid. The resolved config is saved as ``config.yaml`` in the run folder and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"

CHOICES = {
    "optimizer": ("adamw", "lars", "sgd"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "data_mode": ("auto", "memory", "stream"),
    "augment": ("simclr", "crop_flip", "eval", "radiology", "pathology", "fundus"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "on_bad_file": ("error", "skip"),
}


# views each recipe makes by default; None: as many as the method needs (the medical presets)
AUGMENT_VIEWS = {"simclr": 2, "crop_flip": 1, "eval": 1, "radiology": None, "pathology": None, "fundus": None}


class ConfigError(ValueError):
    """A config key or value is invalid; the message names it and says what is valid."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class RunConfig:
    # what to train
    method: str = _f("simclr", "Self-supervised method: simclr, mae or dae (finetune trains 'classifier').")
    method_args: dict = _f({}, "Keyword arguments for the method's constructor, as JSON or key=value pairs, "
                           "e.g. 'temperature=0.5'; merged key by key into the recipe's ('{}' clears them). "
                           "Unknown names are an error.")
    backbone: str = _f("resnet18", "Any timm model name (ResNet and ViT families are tested); built with "
                       "num_classes=0.")
    small_input: bool | None = _f(None, "Small-image mode: ResNet gets a 3x3 stride-1 stem without max-pool, ViT gets "
                                  "img_size/patch_size set. Unset (auto): on for --image-size <= 64. The stride-1 "
                                  "stem costs ~16x the compute at 32 px, so the CPU quickstart recipes set it off.")
    patch_size: int = _f(0, "ViT patch size (0: 4 for images <= 64 px, else the model's own).")
    # data
    data: str = _f("shapes", "'shapes' (built-in synthetic set) or a path: .npz (MedMNIST-style), a labels .csv, "
                   "a CIFAR python batches folder, an MNIST idx folder or an image folder (DICOM included). A "
                   "prefix forces the format: npz:, csv:, cifar:, idx:, folder:.")
    image_size: int = _f(32, "Images are loaded (resize short side + centre crop) and augmented at this size.")
    in_chans: int = _f(0, "Input channels (0: the data's own; 1 keeps grayscale one-channel end to end).")
    data_mode: str = _f("auto", "Image folders: 'memory' decodes once and keeps the set on the device; 'stream' "
                        "decodes in a DataLoader of uint8 batches; 'auto': memory when the decoded set fits in "
                        "memory-limit-gb. Array formats (npz, CIFAR, idx) are always in memory.")
    memory_limit_gb: float = _f(4.0, "Largest decoded dataset (GB) that 'auto' keeps on the device.")
    num_workers: int = _f(2, "DataLoader workers for the streaming path.")
    on_bad_file: str = _f("error", "Image folders: 'error' stops at the first unreadable file and names it; 'skip' "
                          "leaves unreadable files out and reports how many.")
    window: str = _f("auto", "How grayscale files with more than 8 bits (DICOM, 16-bit PNG/TIFF, float TIFF) become "
                     "8-bit: 'auto' (a DICOM file's own VOI LUT or window, else its 0.5-99.5 percentile range; "
                     "16-bit PNG/TIFF: the full 0-65535 range; float TIFF: its percentile range), 'file' (each "
                     "file's percentile range), 'dataset' (one percentile range from the pretraining files, keeps "
                     "differences between files; stored with the run and reused by its evaluations) or 'LO,HI' in "
                     "the files' units, e.g. '-1000,400' (HU) for CT lung.")
    val_fraction: float = _f(0.1, "Share of train carved (stratified, seeded) as validation when labeled data has "
                             "no validation split, and first as test when it has no test split.")
    augment: str = _f("simclr", "Augmentation recipe for pretraining views: simclr, crop_flip, eval (the centre view "
                      "alone, no augmentation; MAE/DAE only), or a medical preset "
                      "(radiology: grayscale X-ray/CT/MR, no flips by default; pathology: H&E, rotations and stain "
                      "jitter; fundus: retina photographs); see vissl_lite/augment/medical.py for the reasons.")
    augment_args: dict = _f({}, "Keyword arguments for the augmentation recipe, e.g. 'strength=0.5,p_blur=0' "
                            "(SimCLR's CIFAR-10 setting); merged key by key into the recipe's ('{}' clears them). "
                            "Unknown names are an error.")
    mean: list = _f([], "Per-channel normalisation mean (empty: ImageNet's; its average for one channel).")
    std: list = _f([], "Per-channel normalisation std (empty: ImageNet's; its average for one channel).")
    init_weights: str = _f("", "A local timm weights file (.safetensors/.pth, e.g. ImageNet weights you "
                           "downloaded) to start pretraining from: continued SSL on in-domain images. Channels are "
                           "adapted (1<->3) and ViT position embeddings resampled.")
    # optimisation
    epochs: int = _f(100, "Epochs over the train split (pretraining; fine-tuning: over the labeled subset).")
    max_steps: int = _f(0, "Train at most this many steps; the lr schedule spans them (0: all epochs). "
                     "Handy for smoke tests.")
    batch_size: int = _f(256, "Images per step (SimCLR sees 2x this many views).")
    optimizer: str = _f("adamw", "adamw, lars (timm's, with bias/norm excluded from decay) or sgd.")
    lr: float = _f(1e-3, "Peak learning rate (after warmup); not rescaled by batch size.")
    min_lr: float = _f(0.0, "Learning rate at the end of the cosine decay.")
    weight_decay: float = _f(0.05, "Decoupled weight decay (biases and norm layers excluded).")
    warmup_epochs: float = _f(5.0, "Linear warmup length in epochs (fractions allowed).")
    clip_grad: float = _f(3.0, "Clip the global gradient norm to this value (0: off).")
    amp: str = _f("auto", "Mixed precision: auto (bf16 on CUDA, off on CPU), bf16, fp16, off.")
    compile: bool = _f(False, "torch.compile the training step's model in place (checkpoints and exports are "
                       "unchanged; needs a C++ compiler on CPU). The first step of each run (each fine-tuning "
                       "sub-run) compiles: ~45 s for the small-input ResNet-18 on 2 CPU cores. Compiled code rounds "
                       "differently and, for MAE/DAE masks and noise, draws different random numbers than eager "
                       "code: resume a run with the setting it started with.")
    # fine-tuning (vissl-lite finetune; the classifier method)
    drop_path: float = _f(0.0, "Stochastic depth rate of the backbone (timm drop_path_rate; off by default, e.g. "
                               "0.1 for ViT fine-tuning).")
    layer_decay: float | None = _f(None, "Layer-wise lr decay for ViT fine-tuning (timm): block i of L gets lr * "
                                   "decay^(L - i). Default: 0.75 for ViTs in 'finetune', off (1.0) otherwise.")
    min_steps: int = _f(0, "Train at least this many steps, adding epochs when the (low-label) train set is small.")
    # run
    seed: int = _f(0, "Seed for weights, data order and augmentation.")
    device: str = _f("auto", "auto picks cuda, then mps, then cpu.")
    out: str = _f("", "Run folder (default: runs/<method>-<data>-<time>).")
    resume: bool = _f(False, "Continue the run in --out from its last checkpoint.")
    checkpoint_every: int = _f(500, "Write a checkpoint every N steps (and always at the end, and on SIGTERM/SIGINT).")
    keep_checkpoints: int = _f(1, "Keep the last K checkpoints: checkpoint.pt is the newest; K > 1 also keeps "
                               "checkpoint-<step>.pt for the last K saves.")
    log_every: int = _f(20, "Log loss/lr/throughput to metrics.jsonl every N steps (means over those steps; "
                            "the only host sync).")
    progress: bool = _f(True, "Show progress bars.")
    # evaluation after pretraining
    probe: bool = _f(True, "After pretraining, run the linear probe and kNN on the SSL and on a random-init "
                     "backbone.")
    probe_epochs: int = _f(100, "Linear-probe epochs on cached features.")
    probe_lrs: list = _f([0.01, 0.03, 0.1, 0.3, 1.0], "Linear-probe learning-rate sweep (SGD), picked on validation.")
    probe_batch_size: int = _f(256, "Linear-probe batch size.")
    label_fraction: list = _f([1.0], "Low-label evaluation: the probe, kNN and fine-tuning see this stratified, "
                              "seeded share of the labeled train split; several values (e.g. 0.01,0.1,1) give a "
                              "label-efficiency curve. Val and test stay whole.")
    labels_per_class: list = _f([], "Low-label evaluation: K labeled train images per class instead of a fraction "
                                "(several values allowed, e.g. 1,5,25).")
    seeds: int = _f(1, "Repeat each evaluation with this many seeds (label subset and head); report mean +- std.")
    knn_k: list = _f([20, 200], "Neighbours for the weighted kNN evaluation (each k is reported).")
    knn_temperature: float = _f(0.07, "Temperature T of the kNN vote weights exp(cos / T).")
    knn_every: int = _f(0, "Online kNN monitor: every N epochs and at the last step, kNN top-1 (the first "
                        "--knn-k) on the val split (train split as the bank), logged to metrics.jsonl and drawn in "
                        "train_curves.png; single-label data only (0: off).")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
# How a run executes, not what it computes: free to differ when a result is reused on --resume.
RUN_ONLY = ("device", "progress", "compile", "num_workers", "log_every", "checkpoint_every", "keep_checkpoints",
            "out", "resume")
_HINTS = typing.get_type_hints(RunConfig)


def valid_keys() -> str:
    return ", ".join(sorted(FIELDS))


def _base_type(name: str) -> tuple[type, bool]:
    """(type, optional) for a field: ``bool | None`` -> (bool, True)."""
    hint = _HINTS[name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return (typing.get_origin(hint) or hint), False


def parse_value(name: str, value: Any) -> Any:
    """Coerce ``value`` (from YAML, a flag string or Python) to the type of field ``name`` or raise ConfigError."""
    if name not in FIELDS:
        close = difflib.get_close_matches(name, FIELDS, n=2)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise ConfigError(f"unknown config key '{name}'; {hint}Valid keys: {valid_keys()}")
    kind, optional = _base_type(name)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{name}' cannot be empty; expected {kind.__name__}")
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "auto", "none"):
                    raise ValueError(value)
                if low in ("auto", "none"):
                    if optional:
                        return None
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(value)
            return str(value)
        if kind is list:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value]  # one value where a list is expected
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()] if value.strip() else []
                value = [yaml.safe_load(v) for v in value]
            if not isinstance(value, (list, tuple)):
                raise ValueError(value)
            return list(value)
        if kind is dict:
            if isinstance(value, str):
                value = _parse_kv(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (ValueError, TypeError, yaml.YAMLError) as e:
        raise ConfigError(f"bad value {value!r} for config key '{name}': expected {kind.__name__} ({e})") from e
    raise ConfigError(f"config key '{name}' has unsupported type {kind}")


def _parse_kv(text: str) -> dict:
    """Parse JSON (``'{"a": 1}'``) or ``'a=1,b=[0.2,1.0]'`` into a dict with YAML-typed values."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        return json.loads(text)
    parts, depth, current = [], 0, ""
    for ch in text:  # split on commas outside brackets
        depth += ch in "[{(" and 1 or (ch in "]})" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    out = {}
    for part in parts:
        if "=" not in part:
            raise ValueError(f"expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v.strip())
        except yaml.YAMLError as e:
            raise ValueError(f"cannot parse value {v!r} of {k!r}") from e
    return out


def recipe_path(name_or_path: str) -> Path:
    """A recipe is a name shipped in vissl_lite/configs/ or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if p.is_dir():
            raise ConfigError(f"--config {p} is a folder; give a YAML file (a run's own is <run>/config.yaml)")
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        return p
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        tuning = [r for r in list_recipes() if r in FINETUNE_RECIPES]
        raise ConfigError(f"unknown recipe '{name_or_path}'. Shipped recipes: {', '.join(pretrain_recipes())} "
                          f"(pretraining), {', '.join(tuning)} (fine-tuning); or give a path to a .yaml file")
    return shipped


FINETUNE_RECIPES = ("finetune",)  # shipped recipes that set fine-tuning, not pretraining


def list_recipes() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def pretrain_recipes() -> list[str]:
    return [r for r in list_recipes() if r not in FINETUNE_RECIPES]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: plain YAML keeps the last
    value, so a recipe edited by appending a line would silently run with one of its two settings."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice; keep one",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_recipe(name_or_path: str) -> dict:
    path = recipe_path(name_or_path)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path} is not a text file; give a YAML file of config keys") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse recipe {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of config keys, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(f"recipe {path} has unknown key(s) {', '.join(unknown)}. Valid keys: {valid_keys()}")
    for key, value in data.items():  # a wrongly typed value names the file it is in
        try:
            parse_value(key, value)
        except ConfigError as e:
            raise ConfigError(f"recipe {path}: {e}") from e
    return data


def _flag(key: str) -> str:
    """A config key as errors name it: the YAML key and the command-line flag."""
    return f"'{key}' (--{key.replace('_', '-')})"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(cfg: RunConfig) -> RunConfig:
    """Check values that types alone do not catch, before any work starts."""
    from vissl_lite.methods import METHODS, unknown_method

    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"bad value {getattr(cfg, key)!r} for {_flag(key)}. Valid: {', '.join(choices)}")
    if cfg.method not in METHODS:
        raise ConfigError(unknown_method(cfg.method))

    from vissl_lite.backbones import check_backbone_name, is_vit_name

    try:
        check_backbone_name(cfg.backbone)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if cfg.method == "mae" and not is_vit_name(cfg.backbone):
        raise ConfigError(f"--method mae needs a ViT backbone; '{cfg.backbone}' is not one. Try --backbone "
                          "vit_tiny_patch16_224, or --method dae / simclr for CNNs")
    views = cfg.augment_args.get("n_views", AUGMENT_VIEWS[cfg.augment]) or METHODS[cfg.method].views
    if views != METHODS[cfg.method].views:
        need = METHODS[cfg.method].views
        if "n_views" in cfg.augment_args and AUGMENT_VIEWS[cfg.augment] in (None, need):  # the recipe fits as it is
            raise ConfigError(f"--method {cfg.method} takes {need} view(s) but n_views={views} in --augment-args "
                              f"makes {cfg.augment} draw {views}; drop n_views (unset, {cfg.augment} makes as many "
                              "views as the method takes)")
        fits = [a for a, n in AUGMENT_VIEWS.items() if n in (None, need) and a != "eval"]
        raise ConfigError(f"--method {cfg.method} takes {need} view(s) but --augment "
                          f"{cfg.augment} makes {views}; use --augment {' or '.join(fits)}")
    from vissl_lite import augment, methods

    for check, name, kwargs in ((methods.check_args, cfg.method, cfg.method_args),
                                (augment.check_args, cfg.augment, cfg.augment_args)):
        try:
            check(name, kwargs)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    if is_vit_name(cfg.backbone):
        small = cfg.image_size <= 64 if cfg.small_input is None else cfg.small_input
        named = re.search(r"patch(\d+)", cfg.backbone)
        patch = cfg.patch_size or (4 if small else int(named.group(1)) if named else 0)
        if patch and cfg.image_size % patch:
            raise ConfigError(f"image_size {cfg.image_size} is not a multiple of the ViT patch size {patch}; pick "
                              f"an image size divisible by {patch} or set --patch-size")
    for key, value in cfg.to_dict().items():  # nan passes every comparison below, inf is no setting
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{_flag(key)} must be a finite number, got {value}")
    positive = ["image_size", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "probe_epochs",
                "probe_batch_size"]
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{_flag(key)} must be > 0, got {getattr(cfg, key)}")
    if cfg.method == "simclr" and cfg.batch_size < 2:
        raise ConfigError(f"SimCLR contrasts each image's views with the other images in the batch, so batch_size "
                          f"must be >= 2 (got {cfg.batch_size}); its loss is 0 with nothing to contrast")
    nonneg = ["epochs", "max_steps", "lr", "min_lr", "weight_decay", "warmup_epochs", "clip_grad", "num_workers",
              "in_chans", "patch_size", "memory_limit_gb"]
    for key in nonneg:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{_flag(key)} must be >= 0, got {getattr(cfg, key)}")
    if cfg.epochs == 0 and cfg.max_steps == 0:
        raise ConfigError("'epochs' (--epochs) and 'max_steps' (--max-steps) are both 0: nothing to train")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"'val_fraction' (--val-fraction) must be in (0, 1), got {cfg.val_fraction}")
    if cfg.in_chans not in (0, 1, 3):
        raise ConfigError(f"'in_chans' (--in-chans) must be 0 (the data's own), 1 or 3, got {cfg.in_chans}")
    if len(cfg.mean) != len(cfg.std):
        raise ConfigError(f"'mean' (--mean) and 'std' (--std) need the same length, got {cfg.mean} and {cfg.std}")
    if not all(map(_is_number, cfg.mean + cfg.std)) or any(v <= 0 for v in cfg.std):
        raise ConfigError(f"'mean' (--mean) and 'std' (--std) are numbers per channel with every std > 0 (images "
                          f"are divided by it), got {cfg.mean} and {cfg.std}")
    if not cfg.knn_k or any(not isinstance(k, int) or k <= 0 for k in cfg.knn_k):
        raise ConfigError(f"'knn_k' (--knn-k) must be a non-empty list of positive integers, got {cfg.knn_k}")
    if (not cfg.label_fraction or any(not isinstance(f, (int, float)) or not 0.0 < f <= 1.0
                                      for f in cfg.label_fraction)
            or any(not isinstance(k, int) or isinstance(k, bool) or k <= 0 for k in cfg.labels_per_class)
            or cfg.seeds < 1):
        raise ConfigError("need label_fraction values in (0, 1], labels_per_class values >= 1 and seeds >= 1; got "
                          f"{cfg.label_fraction}, {cfg.labels_per_class}, {cfg.seeds}")
    if cfg.labels_per_class and cfg.label_fraction != [1.0]:
        raise ConfigError(f"'label_fraction' (--label-fraction) {cfg.label_fraction} and 'labels_per_class' "
                          f"(--labels-per-class) {cfg.labels_per_class} are two ways to choose the labeled subset; "
                          "give one")
    if not 0.0 <= cfg.drop_path < 1.0:
        raise ConfigError(f"'drop_path' (--drop-path) must be in [0, 1), got {cfg.drop_path}")
    if cfg.layer_decay is not None and not 0.0 < cfg.layer_decay <= 1.0:
        raise ConfigError(f"'layer_decay' (--layer-decay) must be in (0, 1] (1 turns it off), got {cfg.layer_decay}")
    if cfg.min_steps < 0:
        raise ConfigError(f"'min_steps' (--min-steps) must be >= 0, got {cfg.min_steps}")
    if cfg.knn_temperature <= 0 or cfg.knn_every < 0:
        raise ConfigError("'knn_temperature' (--knn-temperature) must be > 0 and 'knn_every' (--knn-every) >= 0")
    try:
        from vissl_lite.data.decode import parse_window

        parse_window(cfg.window)
    except ValueError as e:
        raise ConfigError(f"bad value for 'window' (--window): {e}") from e
    if cfg.init_weights and not Path(cfg.init_weights).expanduser().is_file():
        raise ConfigError(f"--init-weights: no file at {cfg.init_weights}; give a local timm weights file "
                          "(.safetensors, .pth or .bin)")
    if not cfg.probe_lrs or any(not _is_number(lr) or lr <= 0 for lr in cfg.probe_lrs):
        raise ConfigError(f"'probe_lrs' (--probe-lrs) must be a non-empty list of positive numbers, got "
                          f"{cfg.probe_lrs}")
    return cfg


def merge_overrides(values: dict, overrides: dict) -> dict:
    """``values | overrides``, except for the argument dicts of the method and the augmentation:

    - given for the recipe's own method/augment, they merge key by key into the recipe's (``p_blur=0`` keeps the
      recipe's ``strength`` and ``scale``); an empty dict (``--augment-args '{}'``) clears them;
    - a different method/augment drops the recipe's arguments (they belong to the one it replaces) and takes only
      those given;
    - a backbone of the other family (ViT for the recipe's ResNet, or back) drops the recipe's ``small_input`` and
      ``patch_size``: chosen for its own backbone (the CPU recipes turn the costly ResNet small-input stem off),
      they would give a ViT 16 px patches on 32 px images, a 2x2 token grid.
    """
    values, overrides = dict(values), dict(overrides)
    if "backbone" in overrides and "backbone" in values and _is_vit(overrides["backbone"]) not in (
            None, _is_vit(values["backbone"])):
        for key in ("small_input", "patch_size"):
            values.pop(key, None)
    for owner, key in (("method", "method_args"), ("augment", "augment_args")):
        before = values.get(owner, getattr(RunConfig, owner))
        if overrides.get(owner, before) != before:
            values.pop(key, None)
        elif key in overrides and values.get(key):
            given = parse_value(key, overrides[key])
            overrides[key] = parse_value(key, values[key]) | given if given else {}
    return values | overrides


def _is_vit(name) -> bool | None:
    """Whether timm model ``name`` is a ViT; None for a name timm does not know (validation names it)."""
    from vissl_lite.backbones import is_vit_name

    try:
        return is_vit_name(str(name))
    except Exception:  # timm raises RuntimeError for an unknown name
        return None


def make_config(recipe: str | None = None, **overrides: Any) -> RunConfig:
    """Resolve defaults < recipe < overrides into a validated RunConfig.

    Args:
        recipe: shipped recipe name or YAML path; None uses ``<method>_quickstart`` when it exists.
        **overrides: config keys (snake_case) with Python or string values.
    """
    values: dict[str, Any] = {}
    if recipe is None:
        method = overrides.get("method", RunConfig.method)
        default = f"{method}_quickstart"
        if default in list_recipes():
            recipe = default
    if recipe is not None:
        values.update(load_recipe(recipe))
    values = merge_overrides(values, overrides)
    parsed = {k: parse_value(k, v) for k, v in values.items()}
    return validate(RunConfig(**parsed))


def label_choice(given: dict) -> dict:
    """``given``'s choice of labeled subset with the other way reset to its default, for laying over a saved
    config: a run pretrained with --label-fraction 0.1 and probed now with --labels-per-class 5 means 5 per
    class, not both."""
    if "labels_per_class" in given and "label_fraction" not in given:
        return {"label_fraction": [1.0], "labels_per_class": given["labels_per_class"]}
    if "label_fraction" in given and "labels_per_class" not in given:
        return {"labels_per_class": [], "label_fraction": given["label_fraction"]}
    return {}


def config_from_dict(data: dict) -> RunConfig:
    """Rebuild a saved config (e.g. from a checkpoint), ignoring nothing: unknown keys are an error."""
    return validate(RunConfig(**{k: parse_value(k, v) for k, v in data.items()}))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: a reader (or a crash) sees
    the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_config(cfg: RunConfig, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
