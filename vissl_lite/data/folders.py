"""Image folders and labels CSVs as an :class:`ImageSet`: splits carved from train where missing, the channel
count and the 16-bit/DICOM windowing resolved from a sample of the training files, then every file decoded once
(or, for a set over ``--memory-limit-gb``, checked and left to the streaming loader).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vissl_lite.data import decode, readers
from vissl_lite.data.datasets import SPLIT_SEED, ImageSet, stratified_split
from vissl_lite.data.readers import DataError


def folder_split(root: Path, name: str, split: str, image_size: int, channels: int, val_fraction: float,
                  data_mode: str, memory_limit_gb: float, progress: bool, on_bad_file: str = "error",
                  window="auto") -> ImageSet:
    tree = readers.read_tree(root)
    files, labels, class_names = tree["train"]
    skip = on_bad_file == "skip"
    unlabeled = bool((labels < 0).all())
    if unlabeled and split not in tree:
        why = _folder_layout(root, tree, class_names, unlabeled, {}, val_fraction) or f"{root} has no class subfolders"
        raise DataError(f"{root} has no labels, so it has no '{split}' split ({why}); evaluate on labeled data "
                        "with --data")
    # Carve the splits a labeled folder lacks from train: test first, then val from what is left.
    pool, carved = np.arange(len(files)), {}
    for name_, seed in (("test", SPLIT_SEED), ("val", SPLIT_SEED + 1)):
        if name_ not in tree and not unlabeled:
            keep, cut = stratified_split(labels[pool], val_fraction, seed)
            carved[name_], pool = pool[cut], pool[keep]
    carved["train"] = pool
    if window == "dataset":  # from the training files only (not the val/test carved here), the same for each split
        window = _dataset_window(tuple(files[i] for i in pool), skip)
    if split in carved:
        files, labels = [files[i] for i in carved[split]], labels[carved[split]]
    else:
        files, labels = tree[split][0], tree[split][1]
    layout = _folder_layout(root, tree, class_names, unlabeled, carved, val_fraction)
    top = _narrow_16bit_max(tuple(tree["train"][0])) if window == "auto" else None
    own, bare = _dicom_window_mix(tuple(tree["train"][0])) if window == "auto" else (0, 0)
    bits = top.bit_length() if top else 0
    window_note = ""
    if top is not None and top <= 255 and not own + bare:  # 8-bit images saved as 16-bit files: read as 8-bit
        window = (0.0, 255.0)
        window_note = (f"note: the sampled 16-bit files hold values up to {top} only (8-bit images stored in 16-bit "
                       "files); every file is read with --window 0,255, so any value above 255 is clipped")
    elif top is not None and top > 255:
        window_note = (
            f"note: the sampled 16-bit files hold values up to {top} of 65535 ({bits}-bit data in 16-bit files?); "
            f"--window auto maps the full 16-bit range, so they load as 0-{round(255 * top / 65535)} of 255, nearly "
            f"black. Pass --window dataset (one range from the training files) or --window 0,{2 ** bits - 1}")
    if own and bare:  # each file its own mapping, two kinds of mapping: the same tissue, other grey levels
        window_note = "\n  ".join(filter(None, [window_note, (
            f"note: of {own + bare} sampled DICOM files, {own} carry their own window (WindowCenter/Width or a VOI "
            f"LUT) and {bare} do not (--window auto maps those by their own 0.5-99.5 percentiles), so one tissue "
            "can load as different grey levels. For one mapping pass --window dataset or --window LO,HI")]))
    elif bare and not own:  # every file stretched to its own range: differences between files are gone
        window_note = "\n  ".join(filter(None, [window_note, (
            f"note: none of {bare} sampled DICOM files carries a window (WindowCenter/Width or a VOI LUT), so "
            "--window auto maps each by its own 0.5-99.5 percentiles and intensity differences between files (HU "
            "in CT) are lost. To keep them pass --window dataset or --window LO,HI")]))
    source_channels, mixed = _folder_channels(tree["train"][0], skip)
    if mixed and not channels:  # a forced --in-chans converts every file, and channel_note says so
        layout = "; ".join(filter(None, [layout, mixed]))
    channels = channels or source_channels  # one channel count for every split
    num_classes = len(class_names) if (labels >= 0).any() else 0
    common = dict(name=name, split=split, channels=channels, image_size=image_size, num_classes=num_classes,
                  class_names=list(class_names), window=window, source_channels=source_channels,
                  layout=layout, window_note=window_note)
    nbytes = len(files) * channels * image_size * image_size
    stream = data_mode == "stream" or (data_mode == "auto" and nbytes > memory_limit_gb * 1e9)
    # Streaming without skip decodes later, in the loader, where a bad file stops the run and is named.
    to_read = [] if stream and not skip else files
    bar = tqdm(to_read, desc=f"{'check' if stream else 'decode'} {name}/{split}",
               disable=not progress or len(to_read) < 500, leave=False)
    keep, decoded, skipped = ([] if to_read else list(range(len(files)))), [], []
    for i, f in enumerate(bar):
        try:
            if stream:
                decode.check_image(f)
            else:
                decoded.append(decode.decode_image(f, image_size, channels, window))
            keep.append(i)
        except DataError:
            if not skip:
                raise
            skipped.append(str(f))
    if skipped and not keep:
        raise DataError(f"every image of {root} ({split}) is unreadable; first: {skipped[0]}")
    labels = torch.from_numpy(labels[keep])
    if stream:
        why = ("--data-mode stream" if data_mode == "stream" else
               f"decoded they would take {nbytes / 1e9:.1f} GB, over --memory-limit-gb {memory_limit_gb:g}")
        note = (f"streaming {name}/{split} from disk ({why}): every epoch decodes each file again, in "
                "--num-workers loader processes")
        return ImageSet(files=[files[i] for i in keep], labels=labels, skipped=skipped, stream_note=note, **common)
    images = torch.stack(decoded) if decoded else torch.empty((0, channels, image_size, image_size), dtype=torch.uint8)
    return ImageSet(images=images, labels=labels, skipped=skipped, **common)


def _folder_layout(root: Path, tree: dict, class_names: list[str], unlabeled: bool, carved: dict,
                   val_fraction: float) -> str:
    """One line on how an image folder or labels CSV was read: which subfolders became classes and what was carved
    from train, or why its subfolders are not classes. For a CSV only what was carved; empty for a CSV with every
    split and for a flat folder of images."""
    rest = " of the rest" if "test" in carved else ""  # test is carved first, val from what test left
    cut = [f"{n} {len(carved[n])} images ({val_fraction:.0%}{rest if n == 'val' else ''})"
           for n in ("test", "val") if n in carved]
    if root.is_file():  # a labels CSV
        missing = " or ".join(n for n in ("val", "test") if n in carved)
        return f"{root} has no {missing} rows (split column), so they are carved from train: {', '.join(cut)}" \
            if cut else ""
    base = root / "train" if (root / "train").is_dir() else root
    parts = [f.relative_to(base).parts for f in tree["train"][0]]
    depths = {len(p) for p in parts}
    if unlabeled:
        deep = [Path(*p) for p in parts if len(p) > 2]
        loose = [p[0] for p in parts if len(p) == 1]
        why = ("" if depths == {1} else
               f"{len(deep)} image(s) sit deeper than <folder>/<class>/<image> (e.g. {deep[0]}: patient/study/ "
               "folders?)" if deep
               else f"{len(loose)} image(s) sit directly in the folder, beside its subfolders (e.g. {loose[0]})"
               if loose
               else "it has a single subfolder, and labels need two or more class subfolders")
        fix = " (move the loose images into class subfolders to label it)" if loose and not deep else ""
        return (f"{base} is read as unlabeled: {why}, so folder names are not labels; every image trains{fix}"
                if why else "")
    shown = ", ".join(class_names[:8]) + (", ..." if len(class_names) > 8 else "")
    return (f"{base} is read as labeled, one class per subfolder: {len(class_names)} classes ({shown})"
            + (f"; carved from train: {', '.join(cut)}" if cut else ""))


@functools.lru_cache(maxsize=4)
def _narrow_16bit_max(files: tuple[Path, ...]) -> int | None:
    return decode.narrow_16bit_max(list(files))


@functools.lru_cache(maxsize=4)
def _dicom_window_mix(files: tuple[Path, ...]) -> tuple[int, int]:
    return decode.dicom_window_mix(list(files))


@functools.lru_cache(maxsize=4)
def _dataset_window(files: tuple[Path, ...], skip: bool = False) -> tuple[float, float]:
    return decode.dataset_window(list(files), skip=skip)


def _folder_channels(files: list[Path], skip_bad: bool = False, samples: int = 4096) -> tuple[int, str]:
    """(3 if any of up to ``samples`` files spread over the folder is in colour, else 1; a note when both kinds
    are there). Only headers are read; a folder up to ``samples`` files is checked whole, so a few colour files
    among many grayscale ones still make it colour rather than being turned gray unseen, and say so."""
    step = max(1, -(-len(files) // samples))
    checked = tuple(files[::step])
    channels, (n_gray, colour, n_colour) = _channels_of(checked, skip_bad)
    if not (n_gray and n_colour):
        return channels, ""
    return 3, (f"{n_colour} of the {len(checked)} checked files are colour (e.g. {colour}), the rest grayscale: the "
               "set loads as 3 channels, grayscale files with their gray channel repeated; pass --in-chans 1 to "
               "read every file as grayscale")


@functools.lru_cache(maxsize=8)
def _channels_of(files: tuple[Path, ...], skip_bad: bool) -> tuple[int, tuple]:
    """(channels, (grayscale count, first colour file, colour count))."""
    gray, colour = [], []
    for f in files:
        try:
            (colour if decode.image_channels(f) == 3 else gray).append(f)
        except DataError:
            if not skip_bad:
                raise
    channels = 3 if colour or not gray else 1
    return channels, (len(gray), colour[0] if colour else None, len(colour))
