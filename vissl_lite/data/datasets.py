"""One entry point, :func:`load_split`, from a ``--data`` spec to an :class:`ImageSet` of uint8 ``(C, S, S)`` images.

Array formats (shapes, npz, CIFAR, idx) and small folders are decoded once into one uint8 tensor (``images``);
large folders keep a file list (``files``) and are decoded by the streaming DataLoader.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vissl_lite.data import arrays, decode, readers, shapes
from vissl_lite.data.readers import DataError

FORMATS = ("shapes", "npz", "cifar", "idx", "folder", "csv")
SPLIT_SEED = 0  # carved validation splits are the same for every run seed, so runs stay comparable
# Stored with each pretraining checkpoint. 2: a labeled array set without test arrays gets test carved from train
# (rule 1, before: only val, and such a set had no test split); runs of rule 1 on such data trained on images that
# rule 2 would test on.
SPLIT_RULE = 2


@dataclass
class ImageSet:
    """One split. Exactly one of ``images`` (decoded) and ``files`` (to stream) is set.

    Attributes:
        images: uint8 (N, C, S, S) or None.
        files: image paths or None.
        labels: int64 (N,) with -1 for unlabeled, or float (N, K) 0/1 for multi-label.
        channels: C after any conversion asked for.
        source_channels: C of the images as stored (3 if any sampled file of a folder is in colour); 0 if unknown.
        num_classes: 0 when unlabeled.
    """

    name: str
    split: str
    labels: torch.Tensor
    channels: int
    image_size: int
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    images: torch.Tensor | None = None
    files: list[Path] | None = None
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (--on-bad-file skip)
    window: str | tuple = "auto"  # how high-range grayscale files map to 8 bits (decode.WINDOW_HELP), resolved
    source_channels: int = 0
    layout: str = ""  # how a folder was read (labeled by subfolder or not), for a console note
    window_note: str = ""  # a console note when 'auto' maps narrow 16-bit files (12-bit data) to dark images
    stream_note: str = ""  # why a folder streams from disk instead of being decoded into memory

    @property
    def data_mode(self) -> str:
        """'stream' (files decoded by the loader at every epoch) or 'memory' (decoded once, kept on the device)."""
        return "stream" if self.files is not None else "memory"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labeled(self) -> bool:
        return self.num_classes > 0

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def subset(self, idx: np.ndarray | torch.Tensor) -> ImageSet:
        """The images at ``idx`` (e.g. a low-label subset of train), same metadata."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return dataclasses.replace(
            self, labels=self.labels[idx], images=None if self.images is None else self.images[idx],
            files=None if self.files is None else [self.files[i] for i in idx.tolist()])


def _format_prefix(spec: str) -> tuple[str, str] | None:
    """(format, path) of a spec written with a format prefix ('npz:/p/x.npz'), else None."""
    head, sep, rest = spec.partition(":")
    return (head, rest) if sep and head in FORMATS and len(head) > 1 else None  # len>1: not a Windows drive


def parse_spec(spec: str, flag: str = "--data") -> tuple[str, str]:
    """``'shapes'``, ``'npz:/p/x.npz'`` or a bare path -> (format, location); errors name ``flag``."""
    if spec == "shapes":
        return "shapes", ""
    if prefixed := _format_prefix(spec):
        head, rest = prefixed
        rest = str(Path(rest).expanduser())
        if not Path(rest).exists():
            raise DataError(f"{flag} {spec}: no such file or folder {rest}")
        return head, rest
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"{flag} {spec}: no such file or folder. Give 'shapes' for the built-in set or a path to an "
                        ".npz, a labels .csv, a CIFAR batches folder, an MNIST idx folder or an image folder")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz", str(path)
        if path.suffix.lower() == ".csv":
            return "csv", str(path)
        raise DataError(f"{flag} {spec}: cannot tell the format of this file; expected a .npz or a labels .csv "
                        "(or a prefix npz:, csv:)")
    if arrays.is_cifar_dir(path):
        return "cifar", str(path)
    if arrays.is_idx_dir(path):
        return "idx", str(path)
    if _is_results(path):  # its plots would be the images
        raise DataError(f"{flag} {spec} is a vissl-lite results folder, not images: give a run as --checkpoint, "
                        f"and as {flag} the data itself (a run's own is 'data' in its config.yaml)")
    with os.scandir(path) as entries:  # (a flat folder of many images: no stat per file)
        runs_inside = sorted(e.name for e in entries if e.is_dir() and _is_results(Path(e.path)))
    if runs_inside:  # its class subfolders would be runs, their images plots
        raise DataError(f"{flag} {spec} holds vissl-lite results folders ({', '.join(runs_inside[:3])}"
                        f"{', ...' if len(runs_inside) > 3 else ''}), not classes of images: give as {flag} the data "
                        "itself (a run's own is 'data' in its config.yaml)")
    return "folder", str(path)


def _is_results(folder: Path) -> bool:
    return (folder / "checkpoint.pt").is_file() or (folder / "metrics.json").is_file()


def absolute_spec(spec: str) -> str:
    """``spec`` with its path made absolute and normalised (no '..', no trailing '/'), so that a run records data
    it can find again from any working folder and the same data spelled two ways compares equal. 'shapes' and
    paths that do not exist are returned as they are."""
    if spec == "shapes":
        return spec
    if prefixed := _format_prefix(spec):
        head, rest = prefixed
        return f"{head}:{os.path.abspath(Path(rest).expanduser())}" if Path(rest).expanduser().exists() else spec
    return os.path.abspath(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec


def same_data(a: str, b: str) -> bool:
    """Whether two specs read the same data: the same format and the same file or folder, however spelled (a format
    prefix or not, relative or absolute, through a symlink). Specs that no longer resolve compare as written."""
    try:
        (fa, la), (fb, lb) = parse_spec(a), parse_spec(b)
    except DataError:
        return absolute_spec(a) == absolute_spec(b)
    return fa == fb and os.path.realpath(la) == os.path.realpath(lb)


def data_signature(spec: str) -> str:
    """A short hash of the names, sizes and modification times of the files ``spec`` reads (for a folder or a
    labels CSV: the image files it lists, and the CSV itself), without decoding any: equal for data left as it
    was, different for data rewritten in place (what a resume compares before it reuses results computed on
    it). 'shapes' is generated, so it has no files."""
    fmt, loc = parse_spec(spec)
    if fmt == "shapes":
        return "shapes"
    root = Path(loc)
    if fmt in ("folder", "csv"):
        files = sorted({f for found, _, _ in readers.read_tree(root).values() for f in found} | (
            {root} if root.is_file() else set()))
    else:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{os.path.relpath(f, root.parent if root.is_file() else root)}:{st.st_size}:{st.st_mtime_ns};"
                 .encode())
    return h.hexdigest()[:16]


def data_name(spec: str) -> str:
    fmt, loc = parse_spec(spec)
    return "shapes" if fmt == "shapes" else Path(loc).stem or Path(loc).name


def stratified_split(labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, carved): ``fraction`` of every class carved out, seeded. Multi-label or unlabeled data is
    split uniformly at random."""
    rng = np.random.default_rng(seed)
    if labels.ndim != 1 or (labels < 0).all():
        perm = rng.permutation(len(labels))
        n = int(round(fraction * len(labels)))
        return np.sort(perm[n:]), np.sort(perm[:n])
    carved = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_cut = int(round(fraction * len(idx)))
        if n_cut == 0 and len(idx) >= 2:  # tiny classes still get one image in the carved split
            n_cut = 1
        carved.append(idx[:n_cut])
    carved_idx = np.sort(np.concatenate(carved))
    keep = np.setdiff1d(np.arange(len(labels)), carved_idx)
    return keep, carved_idx


def label_subset(labels: np.ndarray, fraction: float = 1.0, per_class: int = 0, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded labeled subset: ``per_class`` images of every class, or ``fraction`` of each
    class (at least one). Multi-label data takes ``fraction`` of the rows at random (per_class is undefined)."""
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        if per_class:
            raise ValueError("labels_per_class needs single-label data; use label_fraction for multi-label data")
        return np.sort(rng.permutation(len(labels))[:max(1, int(round(fraction * len(labels))))])
    chosen = []
    for c in np.unique(labels[labels >= 0]):
        idx = rng.permutation(np.flatnonzero(labels == c))
        take = min(per_class, len(idx)) if per_class else max(1, int(round(fraction * len(idx))))
        chosen.append(idx[:take])
    return np.sort(np.concatenate(chosen))


def _normalise_labels(labels: np.ndarray | None, n: int) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    return labels.astype(np.float32) if labels.ndim == 2 else labels.astype(np.int64)


def _to_chw(images: np.ndarray, source: str = "the images") -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) or (N, C, H, W) uint8 -> uint8 tensor (N, C, H, W)."""
    if images.dtype != np.uint8:
        raise DataError(f"{source}: images have dtype {images.dtype}; expected uint8 (0-255). Convert them first, "
                        "e.g. (x * 255).round().astype('uint8') for floats in [0, 1]")
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim == 3:
        return t[:, None]
    if t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        return t.permute(0, 3, 1, 2).contiguous()
    return t


def channel_note(data: ImageSet, spec: str) -> str | None:
    """A console note when ``data``'s images were converted to another channel count, else None."""
    src, dst = data.source_channels, data.channels
    if not src or src == dst:
        return None
    how = "the gray channel repeated" if dst == 3 else "ITU-R 601 luma"
    return (f"note: {spec} has {'colour' if src == 3 else 'grayscale'} images; the backbone takes {dst} "
            f"channel{'s' if dst > 1 else ''}, so they are converted ({how})")


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) to 1 or 3 channels: gray->RGB repeats, RGB->gray uses ITU-R 601 luma."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise DataError(f"cannot convert {c}-channel images to {channels} channels")


@functools.lru_cache(maxsize=4)
def _array_codes(fmt: str, loc: str) -> np.ndarray | None:
    """The sorted class codes of an array dataset's single-label splits when they are not 0..K-1 (e.g. 1/2 or
    1000/2000), so each code used is one class rather than max + 1 classes, most of them empty; else None."""
    found = [_normalise_labels(lab, len(img)) for img, lab in _read_arrays(fmt, loc).values() if lab is not None]
    if not found or found[0].ndim != 1:
        return None
    codes = np.unique(np.concatenate(found))
    if codes.size and codes[0] < 0:
        raise DataError(f"{loc}: labels include negative codes ({codes[0]}); classes are 0, 1, ... (an image "
                        "without a label belongs in a split without a labels array)")
    return codes if codes.size and len(codes) != codes[-1] + 1 else None


@functools.lru_cache(maxsize=4)
def _read_arrays(fmt: str, loc: str) -> dict:
    if fmt == "npz":
        splits = arrays.read_npz(Path(loc))
    elif fmt == "cifar":
        splits = arrays.read_cifar(Path(loc))
    elif fmt == "idx":
        splits = arrays.read_idx(Path(loc))
    else:
        raise AssertionError(fmt)
    _check_label_layout(loc, splits)
    return splits


def _check_label_layout(loc: str, splits: dict) -> None:
    """Every labelled split holds the same kind of labels (class codes, or the same number of 0/1 columns), and
    val/test have no class that train lacks; a mix would be read as another task or crash the evaluation."""
    labels = {s: _normalise_labels(lab, len(img)) for s, (img, lab) in splits.items() if lab is not None}
    if "train" not in labels:
        return

    def layout(x: np.ndarray) -> str:
        return "class codes, one column" if x.ndim == 1 else f"multi-label, {x.shape[1]} 0/1 columns"

    for split, lab in labels.items():
        if layout(lab) != layout(labels["train"]):
            onehot = labels["train"].ndim == 2 or lab.ndim == 2
            raise DataError(f"{loc}: '{split}_labels' holds {layout(lab)}, while 'train_labels' holds "
                            f"{layout(labels['train'])}; every split needs the same kind of labels"
                            + ("; for one-hot rows store the class codes instead (labels.argmax(1))"
                               if onehot else ""))
    if labels["train"].ndim == 1:
        readers.check_classes_in_train(labels, loc)


def _array_split(fmt: str, loc: str, split: str, val_fraction: float) -> tuple[np.ndarray, np.ndarray | None]:
    splits = _read_arrays(fmt, loc)
    carved, _, too_few = _array_carving(fmt, loc, val_fraction)
    if split in carved:
        images, labels = splits["train"]
        return images[carved[split]], (labels[carved[split]] if labels is not None else None)
    if split not in splits:
        if too_few:  # training still runs on every image; the evaluations say why they cannot
            raise DataError(too_few)
        if splits["train"][1] is None and split == "val":
            raise DataError(f"{loc} has no labels, so no validation split is carved from it")
        how = (f"; add '{split}_images' and '{split}_labels' arrays to the file" if fmt == "npz" else "")
        raise DataError(f"{loc} has no '{split}' split (it has: {', '.join(splits)}){how}, or evaluate on data "
                        "that has one (--data)")
    return splits[split]


@functools.lru_cache(maxsize=8)
def _array_carving(fmt: str, loc: str, val_fraction: float) -> tuple[dict[str, np.ndarray], str, str]:
    """The splits an array dataset lacks, carved from its train split as image folders are: ``({split: indices into
    train}, console note, why nothing could be carved)``, with "train" the indices left to train on when anything
    was carved. Labeled data without a test split gets one (seed SPLIT_SEED) and val from the rest (SPLIT_SEED +
    1); with a test split, only val is carved (seed SPLIT_SEED, from all of train). Unlabeled data without val
    trains on every image, and so does a set too small to carve from (its evaluations are refused)."""
    splits = _read_arrays(fmt, loc)
    images, labels = splits["train"]
    if labels is None or {"val", "test"} <= set(splits):
        return {}, "", ""
    labels = _normalise_labels(labels, len(images))
    pool, carved = np.arange(len(images)), {}
    for name, seed in (("test", SPLIT_SEED), ("val", SPLIT_SEED + ("test" not in splits))):
        if name not in splits:
            keep, cut = stratified_split(labels[pool], val_fraction, seed)
            carved[name], pool = pool[cut], pool[keep]
    if not len(pool) or not all(len(v) for v in carved.values()):
        each = ", at least one image per class" if labels.ndim == 1 else ""
        return {}, "", (f"{loc}: its {len(images)} training images are too few to carve {' and '.join(carved)} from "
                        f"({val_fraction:.0%} each{each}); add "
                        f"{' and '.join(f'{n}_images/{n}_labels' for n in carved)} arrays, or more images")
    carved["train"] = pool
    rest = " of the rest" if "test" in carved else ""
    cut = [f"{n} {len(carved[n])} images ({val_fraction:.0%}{rest if n == 'val' else ''})"
           for n in ("test", "val") if n in carved]
    missing = " or ".join(f"'{n}'" for n in ("test", "val") if n in carved)
    return carved, f"{Path(loc).name} has no {missing} split, so it is carved from train: {', '.join(cut)}", ""


def skipped_files(splits: dict[str, ImageSet]) -> dict:
    """metrics.json's ``skipped_files``: the unreadable files a command left out (``--on-bad-file skip``) over every
    split it read, counted per split; ``files`` names the first 100."""
    files = [f for data in splits.values() for f in data.skipped]
    return {"count": len(files), "by_split": {name: len(data.skipped) for name, data in splits.items()},
            "files": files[:100]}


def load_split(spec: str, split: str = "train", image_size: int = 32, channels: int = 0,
               val_fraction: float = 0.1, data_mode: str = "auto", memory_limit_gb: float = 4.0,
               progress: bool = True, on_bad_file: str = "error", window="auto") -> ImageSet:
    """Load one split of ``spec`` at ``image_size`` with ``channels`` (0: the data's own).

    Labeled data without a validation split gets a seeded, stratified one carved from train (``val_fraction``);
    labeled data without a test split (a folder without split folders, a CSV without test rows, an npz without
    test arrays) also gets a test split carved the same way, first, so probes never see train data.
    ``on_bad_file``: 'error' stops at the first unreadable image file and names it; 'skip' leaves such files out
    and lists them in ``ImageSet.skipped``. ``window`` maps grayscale files with more than 8 bits (DICOM, 16-bit
    PNG/TIFF) to 8 bits (see ``decode.WINDOW_HELP``); 'dataset' is computed from the training files, so every
    split gets the same window. Array formats hold 8-bit images already and ignore it.
    """
    if on_bad_file not in ("error", "skip"):
        raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split '{split}'; valid: train, val, test")
    fmt, loc = parse_spec(spec)
    name = data_name(spec)
    class_names: list[str] = []
    if fmt == "shapes":
        images, labels = shapes.shapes_split(split, size=image_size)
        class_names = list(shapes.CLASS_NAMES)
    elif fmt in ("folder", "csv"):
        from vissl_lite.data.folders import folder_split  # (it builds ImageSets: imported once this module is)

        return folder_split(Path(loc), name, split, image_size, channels, val_fraction, data_mode,
                            memory_limit_gb, progress, on_bad_file, decode.parse_window(window))
    else:
        images, labels = _array_split(fmt, loc, split, val_fraction)
    labels = _normalise_labels(labels, len(images))
    codes = _array_codes(fmt, loc) if fmt != "shapes" else None
    if codes is not None and labels.ndim == 1 and (labels >= 0).all():  # e.g. 1/2: one class per code used
        labels, class_names = np.searchsorted(codes, labels).astype(np.int64), [str(c) for c in codes]
    x = _to_chw(images, f"{loc} ({split} split)")
    # a no-op at the right size; in chunks, so a MedMNIST+ 224 px set resized to 64 px never exists as floats whole
    x = torch.cat([decode.resize_center_crop(c, image_size) for c in x.split(2048)]) if len(x) else x
    source_channels = x.shape[1]
    x = convert_channels(x, channels or source_channels)
    num_classes = len(class_names) if class_names else _num_classes(fmt, loc)
    layout = _array_carving(fmt, loc, val_fraction)[1] if fmt != "shapes" else ""
    return ImageSet(name=name, split=split, labels=torch.from_numpy(labels), channels=x.shape[1],
                    image_size=image_size, num_classes=num_classes, class_names=class_names, images=x,
                    source_channels=source_channels, layout=layout)


def has_labels(spec: str) -> bool:
    """Whether ``spec``'s training split has labels, from file listings and arrays alone (no image is decoded),
    so a command can refuse unlabeled evaluation data before any training."""
    fmt, loc = parse_spec(spec)
    if fmt in ("shapes", "cifar"):
        return True
    if fmt in ("folder", "csv"):
        return bool((readers.read_tree(Path(loc))["train"][1] >= 0).any())
    if fmt == "npz":  # the archive's member names: its arrays may be gigabytes
        return "train_labels" in arrays.npz_keys(Path(loc))
    return _read_arrays(fmt, loc)["train"][1] is not None  # MNIST-format idx: small


def single_class(spec: str) -> str | None:
    """The one class of a single-label ``spec`` whose training labels are all the same ('' when it has no name),
    else None; from file listings and the label array alone (no image is decoded), so a command that scores
    classifiers can refuse such data before any training. Multi-label data is never one class here."""
    fmt, loc = parse_spec(spec)
    if fmt in ("folder", "csv"):
        _, labels, names = readers.read_tree(Path(loc))["train"]
    elif fmt == "npz" and "train_labels" in arrays.npz_keys(Path(loc)):
        with np.load(loc, allow_pickle=False) as z:
            labels, names = np.asarray(z["train_labels"]), []
        labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels  # (N, 1) class codes
    else:
        return None
    codes = np.unique(labels[labels >= 0]) if labels.ndim == 1 else np.array([])
    if len(codes) != 1:
        return None
    code = int(codes[0])
    return names[code] if code < len(names) else str(code)


def arrays_carve_test(spec: str) -> bool:
    """Whether ``spec`` is a labeled array set (npz, idx) without a test split, whose test split is carved from
    train under split rule 2 (:data:`SPLIT_RULE`)."""
    fmt, loc = parse_spec(spec)
    if fmt not in ("npz", "idx"):
        return False
    splits = _read_arrays(fmt, loc)
    return splits["train"][1] is not None and "test" not in splits


def carves_splits(spec: str) -> bool:
    """Whether ``spec`` lacks a val or test split, which are then carved from train by ``val_fraction``; from
    listings and archive member names alone."""
    fmt, loc = parse_spec(spec)
    if fmt == "shapes":
        return False
    if fmt in ("folder", "csv"):
        return not {"val", "test"} <= set(readers.read_tree(Path(loc)))
    if fmt == "npz":
        return not {"val_images", "test_images"} <= set(arrays.npz_keys(Path(loc)))
    return not {"val", "test"} <= set(_read_arrays(fmt, loc))


def _num_classes(fmt: str, loc: str) -> int:
    """Classes over every split of an array dataset (a carved split may miss a rare class); 0 if unlabeled."""
    found = [_normalise_labels(lab, len(img)) for img, lab in _read_arrays(fmt, loc).values()]
    if found[0].ndim == 2:
        return found[0].shape[1]
    top = max(int(lab.max()) for lab in found)
    return top + 1 if top >= 0 else 0
