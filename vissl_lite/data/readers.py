"""Which image files make a dataset, and their labels: image folders and labels CSVs.

Both return ``{split: (files, labels, class_names)}``; no pixels are read here. Array formats (npz, CIFAR, MNIST
idx) are in :mod:`vissl_lite.data.arrays`; decoding a file to a fixed-size uint8 tensor is
:func:`vissl_lite.data.decode.decode_image`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

DICOM_EXTENSIONS = {".dcm", ".dicom"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm",
                    *DICOM_EXTENSIONS}
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


class DataError(ValueError):
    """A dataset file or folder cannot be read; the message names it and says how to fix it."""


# what PIL raises for a broken, truncated or hostile image file (a decompression bomb is neither OSError nor
# ValueError)
DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


# ---------------------------------------------------------------------------------------------------- folders

def list_images(root: Path) -> list[Path]:
    """Image files under ``root``, recursively and sorted; symlinked folders are followed, each real folder once
    (so a link back up the tree ends). Hidden files and folders (macOS ``._x.png``, ``.ipynb_checkpoints``) and
    zip tools' ``__MACOSX`` are not images of the dataset and are left out."""
    seen, found = set(), []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")  # sorted: which of two
        # links to one folder is read first must not depend on the file system
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        found += [Path(folder, n) for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS
                  and not n.startswith(".")]
    return sorted(p for p in found if p.is_file())


def read_folder(root: Path) -> dict[str, tuple[list[Path], np.ndarray, list[str]]]:
    """An image folder, labeled or not.

    - ``root/{train,val,test}/...``: each split is read as below.
    - class-per-subfolder (every image sits directly in ``root/<class>/``, at least two classes): labeled.
    - anything else: every image under ``root``, searched recursively, unlabeled (label -1). Deeper trees
      (``patient/study/series/``, as medical archives are kept) are unlabeled: their folder names are not classes.

    Returns ``{split: (files, labels (N,) int64, class_names)}``.
    """
    splits = {}
    for split, names in SPLIT_ALIASES.items():
        for name in names:
            if (root / name).is_dir():
                splits[split] = root / name
                break
    if "train" not in splits:
        splits = {"train": root}
    out = {}
    class_names: list[str] | None = None
    for split, folder in splits.items():
        files = list_images(folder)
        if not files:
            raise DataError(f"no images found under {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        rel_parts = [f.relative_to(folder).parts for f in files]
        subdirs = sorted({p[0] for p in rel_parts if len(p) > 1})
        labeled = all(len(p) == 2 for p in rel_parts) and len(subdirs) >= 2
        if labeled:
            if class_names is None:
                class_names = subdirs
            unknown = sorted(set(subdirs) - set(class_names))
            if unknown:
                raise DataError(f"{folder} has class folders {unknown} that the train split does not have")
            index = {c: i for i, c in enumerate(class_names)}
            labels = np.array([index[p[0]] for p in rel_parts], dtype=np.int64)
        else:
            labels = np.full(len(files), -1, dtype=np.int64)
        out[split] = (files, labels, class_names or [])
    return out


def read_tree(root: Path) -> dict[str, tuple[list[Path], np.ndarray, list[str]]]:
    """:func:`read_csv` for a ``.csv`` file, :func:`read_folder` for a folder."""
    return read_csv(root) if root.is_file() else read_folder(root)  # a file here is a labels CSV (any suffix)


def read_csv(path: Path) -> dict[str, tuple[list[Path], np.ndarray, list[str]]]:
    """A CSV that labels image files: a ``path`` column (relative to the CSV's folder, or absolute), an optional
    ``split`` column (train / val / test), and the labels:

    - one other column: single-label; its values are class names (sorted), or integer codes (0..K-1 used as they
      are; codes that skip values, e.g. 1/2, one class each in sorted order);
    - several other columns: multi-label, one 0/1 column per label (the header names the labels).

    Returns ``{split: (files, labels, class_names)}`` like :func:`read_folder`.
    """
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's "CSV UTF-8" starts with a BOM
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            body = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read labels CSV {path} ({e})") from e
    # a spreadsheet's trailing separators: unnamed columns with nothing in them
    empty = [i for i, h in enumerate(header) if not h and all(i >= len(r) or not r[i].strip() for _, r in body)]
    header = [h for i, h in enumerate(header) if i not in empty]
    body = [(n, [c for i, c in enumerate(r) if i not in empty]) for n, r in body]
    # 'path' and 'split' in any case ('Path', 'SPLIT'); the other columns are labels, named as written
    key = {h: h.lower() if h.lower() in ("path", "split") else h for h in header}
    if "path" not in key.values() or not body:
        other = next((d for d in ";\t|" if len(header) == 1 and d in header[0]), None)
        hint = f"; the header is one column holding {other!r}: save the file comma-separated" if other else ""
        raise DataError(f"{path} needs a header with a 'path' column and label column(s), e.g. 'path,label', and "
                        f"at least one row (header read: {','.join(header) or 'none'}){hint}")
    if len(set(key.values())) < len(header):
        raise DataError(f"{path} has a repeated column name in its header ({','.join(header)})")
    rows = []
    for line, row in body:
        if len(row) != len(header):
            raise DataError(f"{path} line {line} has {len(row)} cells for {len(header)} columns")
        rows.append({key[h]: cell.strip() for h, cell in zip(header, row)} | {"_line": line})
        if not rows[-1]["path"]:
            raise DataError(f"{path} line {line} has no path")
    label_cols = [key[h] for h in header if key[h] not in ("path", "split")]
    if not label_cols:
        raise DataError(f"{path} has no label column; add one ('path,label') or use the image folder itself")
    files = [Path(r["path"]) if Path(r["path"]).is_absolute() else path.parent / r["path"] for r in rows]
    missing = [f for f in files if not f.is_file()]
    if missing:
        slashes = "\\" in str(missing[0]) and os.sep != "\\"
        hint = "; the paths use backslashes (written on Windows?): write them with '/'" if slashes else ""
        raise DataError(f"{path} lists {len(missing)} file(s) that do not exist, e.g. {missing[0]}; paths are "
                        f"relative to the CSV's folder{hint}. Fix the paths or delete those rows (--on-bad-file skip "
                        "is for files that exist but do not decode)")
    seen: dict = {}
    for r, f in zip(rows, files):
        first = seen.setdefault(f.resolve(), r["_line"])
        if first != r["_line"]:  # one image in two rows: two labels, or the same image in train and test
            raise DataError(f"{path} lists {r['path']} twice (lines {first} and {r['_line']}); list each image once "
                            "(several labels of one image: one 0/1 column per label)")
    if len(label_cols) == 1:
        values = [r[label_cols[0]] for r in rows]
        blank = [r["_line"] for r, v in zip(rows, values) if not v]
        if blank:
            raise DataError(f"{path}: {len(blank)} row(s) have no value in label column '{label_cols[0]}', first "
                            f"on line {blank[0]}; give every row a label, or drop the unlabeled rows")
        coded = [re.fullmatch(r"-?[0-9]+", v) is not None for v in values]  # ASCII digits: int() takes them
        if any(coded) and not all(coded):  # '0,1,a,b' or '1' beside '1.0': four classes where two were meant
            stray = sum(coded) <= len(coded) / 2  # the rarer kind is the likely slip: point at its first row
            line = next(r["_line"] for r, c in zip(rows, coded) if c == stray)
            ints = sorted({v for v, c in zip(values, coded) if c}, key=int)[:3]
            names = sorted({v for v, c in zip(values, coded) if not c})[:3]
            raise DataError(f"{path}: label column '{label_cols[0]}' mixes integer codes ({', '.join(ints)}) with "
                            f"other values ({', '.join(names)}); the first {'code' if stray else 'other value'} is "
                            f"on line {line}. Write every label as a code (0, 1, ...) or every label as a class name")
        if all(coded):
            labels = np.array([int(v) for v in values], dtype=np.int64)
            if labels.min() < 0:
                raise DataError(f"{path}: label column '{label_cols[0]}' has negative integers; classes are 0, 1, ...")
            codes = np.unique(labels)
            if len(codes) == codes[-1] + 1:  # 0 .. K-1: the codes are the classes
                class_names = [str(c) for c in range(int(labels.max()) + 1)]
            else:  # e.g. 1/2 or 1000/2000: one class per code used (not max + 1 classes, most of them empty)
                class_names = [str(c) for c in codes]
                labels = np.searchsorted(codes, labels).astype(np.int64)
        else:
            class_names = sorted(set(values))
            labels = np.array([class_names.index(v) for v in values], dtype=np.int64)
    else:
        labels = np.zeros((len(rows), len(label_cols)), dtype=np.float32)
        for i, r in enumerate(rows):
            for j, c in enumerate(label_cols):
                try:
                    value = float(r[c])
                except ValueError:
                    value = -1.0
                if value not in (0.0, 1.0):
                    raise DataError(
                        f"{path} line {r['_line']}, column '{c}': {r[c]!r} is not 0 or 1. With several label "
                        f"columns ({', '.join(label_cols)}) each is one 0/1 label; map blank or -1 (uncertain) "
                        "cells to 0 or 1 first. For one label column plus a split column, name it 'split'; drop "
                        "columns that are not labels (e.g. patient ids)")
                labels[i, j] = value
        class_names = label_cols
    alias = {name: split for split, names in SPLIT_ALIASES.items() for name in names}
    given = [r.get("split", "").strip().lower() or "train" for r in rows]
    unknown = sorted(set(given) - set(alias))
    if unknown:
        raise DataError(f"{path}: unknown split value(s) {unknown}; use train, val (or valid, validation) or test")
    splits = [alias[s] for s in given]
    out = {}
    for name in ("train", "val", "test"):
        idx = [i for i, s in enumerate(splits) if s == name]
        if idx:
            out[name] = ([files[i] for i in idx], labels[idx], class_names)
    if "train" not in out:
        raise DataError(f"{path} has no training rows (split column empty or 'train')")
    if len(label_cols) == 1:
        check_classes_in_train({s: v[1] for s, v in out.items()}, str(path), class_names)
    return out


def check_classes_in_train(labels: dict[str, np.ndarray], source: str, class_names: list[str] | None = None) -> None:
    """Raise DataError when a val or test split has a class (single-label codes 0..K-1) that no training image
    has: no probe or classifier can learn it, and the test metrics would count it as a class silently missed."""
    train = set(np.unique(labels["train"]).tolist())
    for split in ("val", "test"):
        if split in labels and labels[split].ndim == 1:
            extra = sorted(set(np.unique(labels[split]).tolist()) - train)
            if extra:
                names = [class_names[i] for i in extra] if class_names else extra
                raise DataError(f"{source}: the {split} split has class(es) {names} that no training image has; "
                                "put some images of each class in train, or leave those rows out of "
                                f"{split}")
