"""Readers for files on disk. Each returns uint8 arrays and labels; no tensors, no resizing.

Array formats (npz, CIFAR batches, MNIST idx) return ``{split: (images (N, H, W[, C]) uint8, labels)}``.
Image folders return file lists; decoding a file to a fixed-size uint8 tensor is :func:`decode_image`.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

DICOM_EXTENSIONS = {".dcm", ".dicom"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm",
                    *DICOM_EXTENSIONS}
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


class DataError(ValueError):
    """A dataset file or folder cannot be read; the message names it and says how to fix it."""


# what PIL raises for a broken, truncated or hostile image file (a decompression bomb is neither OSError nor
# ValueError)
DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


# ---------------------------------------------------------------------------------------------------- npz

NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _npz_error(path: Path, e: Exception) -> DataError:
    return DataError(f"cannot read {path} as an .npz file ({type(e).__name__}: {e}); check that the file is "
                     "complete, or re-download it")


def npz_keys(path: Path) -> list[str]:
    """The array names in an npz, without reading the arrays."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z.files)
    except NPZ_ERRORS as e:
        raise _npz_error(path, e) from e


def read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """MedMNIST-style npz: ``{split}_images`` (N, H, W) or (N, H, W, 3) uint8 and ``{split}_labels`` (N,), (N, 1)
    or multi-label (N, K). Splits without labels are allowed (labels None)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k.endswith(("_images", "_labels"))}
            keys = set(z.files)
    except NPZ_ERRORS as e:
        raise _npz_error(path, e) from e
    out = {}
    for split in ("train", "val", "test"):
        if f"{split}_images" not in keys:
            continue
        images = arrays[f"{split}_images"]
        labels = arrays.get(f"{split}_labels")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise DataError(f"{path}: '{split}_images' has shape {images.shape}; expected (N, H, W) or "
                            "(N, H, W, 1|3)")
        if labels is not None and len(labels) != len(images):
            raise DataError(f"{path}: '{split}_labels' has {len(labels)} rows for {len(images)} images")
        if len(images) == 0:  # an empty val or test split is one the file does not have
            if split == "train":
                raise DataError(f"{path}: 'train_images' holds no images (shape {images.shape}); the train split "
                                "is what every command reads")
            continue
        if labels is not None and labels.dtype.kind not in "biuf":
            raise DataError(f"{path}: '{split}_labels' holds {labels.dtype} values (e.g. {labels.flat[0]!r}); "
                            "store integer class codes 0..K-1 (or 0/1 columns for multi-label), and the class "
                            "names in your own notes, or use a labels CSV, which takes class names")
        if labels is not None and labels.dtype.kind == "f" and labels.size and not (
                np.isfinite(labels).all() and (labels == np.round(labels)).all()):
            raise DataError(f"{path}: '{split}_labels' has non-integer values; labels are class codes 0..K-1 or "
                            "0/1 columns")
        out[split] = (images, labels)
    if "train" not in out:
        raise DataError(f"{path} has no 'train_images' array (keys: {', '.join(sorted(keys))}); a MedMNIST-style "
                        "npz needs train_images [+ train_labels, val_*, test_*]")
    return out


# ---------------------------------------------------------------------------------------------------- CIFAR

def is_cifar_dir(path: Path) -> bool:
    return (path / "data_batch_1").is_file() or ((path / "train").is_file() and (path / "meta").is_file())


def read_cifar(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test; fine labels) python batches.

    These files are Python pickles, the format the CIFAR authors publish; only open ones you trust.
    """

    def load(file: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(file, "rb") as f:
                d = pickle.load(f, encoding="bytes")
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            raise DataError(f"cannot read CIFAR batch {file} ({e}); re-extract the archive") from e
        key = b"labels" if b"labels" in d else b"fine_labels"
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return data, np.asarray(d[key], dtype=np.int64)

    if (path / "data_batch_1").is_file():
        parts = [load(path / f"data_batch_{i}") for i in range(1, 6) if (path / f"data_batch_{i}").is_file()]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        test_file = path / "test_batch"
    else:
        train = load(path / "train")
        test_file = path / "test"
    out = {"train": train}
    if test_file.is_file():
        out["test"] = load(test_file)
    return out


# ---------------------------------------------------------------------------------------------------- MNIST idx

def _idx_file(path: Path, stem: str) -> Path | None:
    for name in (stem, stem.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            if (path / (name + suffix)).is_file():
                return path / (name + suffix)
    return None


def is_idx_dir(path: Path) -> bool:
    return _idx_file(path, "train-images-idx3-ubyte") is not None


def read_idx_array(file: Path) -> np.ndarray:
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {file} ({e}); re-download or re-extract it") from e
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{file} is not an unsigned-byte IDX file (header {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).copy()  # writable, for torch.from_numpy
    if data.size != int(np.prod(shape)):
        raise DataError(f"{file} is truncated: header says {shape}, found {data.size} bytes of data")
    return data.reshape(shape)


def read_idx(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """MNIST-format folder: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-*."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _idx_file(path, f"{prefix}-images-idx3-ubyte")
        if images is None:
            continue
        labels = _idx_file(path, f"{prefix}-labels-idx1-ubyte")
        out[split] = (read_idx_array(images), read_idx_array(labels).astype(np.int64) if labels else None)
    if "train" not in out:
        raise DataError(f"{path} has no train-images-idx3-ubyte[.gz]; an MNIST-format folder needs the train files")
    return out


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


def _pydicom():
    try:
        import pydicom
    except ImportError as e:
        raise DataError("reading DICOM files needs pydicom: pip install 'vissl-lite[medical]' (or pip install "
                        "pydicom)") from e
    return pydicom


WINDOW_HELP = ("'auto' (a DICOM file's own VOI LUT or window tags, an 8-bit one's stored levels, else its 0.5-99.5 "
               "percentile range; 16-bit PNG/TIFF: the full 0-65535 range, or 0-255 for a set whose sampled files "
               "stay below 256; 32-bit float TIFF: its 0.5-99.5 percentile range), 'file' (every "
               "file's own 0.5-99.5 percentile range), 'dataset' (one 0.5-99.5 percentile range of the training "
               "files' values, the same for every file and split) or 'LO,HI' in the files' units (Hounsfield units "
               "for CT, e.g. '-1000,400')")


def parse_window(value) -> str | tuple[float, float]:
    """'auto' | 'file' | 'dataset' | 'LO,HI' (or a pair) -> the mode string or a (lo, hi) tuple of floats."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    elif isinstance(value, str) and value in ("auto", "file", "dataset"):
        return value
    else:
        try:
            lo, hi = (float(v) for v in str(value).split(","))
        except ValueError:
            raise ValueError(f"window {value!r} is not valid; give {WINDOW_HELP}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"window {value!r}: both ends must be finite numbers")
    if not hi > lo:
        raise ValueError(f"window {value!r}: the upper end must be above the lower end")
    return lo, hi


# a file's own display window: a linear (lo, hi) in its values, a function from its values to 0..1 (a DICOM VOI LUT
# or sigmoid window), or None (it has none)
OwnWindow = tuple[float, float] | Callable[[np.ndarray], np.ndarray] | None


def read_high_range(file: Path) -> tuple[np.ndarray, OwnWindow, bool] | None:
    """A grayscale image with more than 8 bits, before any windowing: ``(values, own_window, invert)``.

    - DICOM: modality values (rescale slope/intercept or the modality LUT applied); ``own_window`` is its VOI LUT
      or first window centre/width under its VOI LUT Function (:func:`_dicom_own_window`), its stored levels for an
      8-bit file without them or a rescale, else None; ``invert`` for MONOCHROME1.
    - 16-bit (or 32-bit int) PNG/TIFF: the stored values; ``own_window`` is 0-65535, the 16-bit range (None for a
      32-bit int file with values outside it, e.g. signed Hounsfield units: 'auto' then uses its percentiles).
    - 32-bit float TIFF: the stored values (non-finite ones set to the lowest finite value); no ``own_window``.

    Returns None for 8-bit and colour files, which are already display images and are never windowed.
    """
    if file.suffix.lower() in DICOM_EXTENSIONS:
        return _read_dicom_values(file)
    try:
        with Image.open(file) as im:
            return _high_range_pil(im)
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode image {file} ({e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e


HIGH_RANGE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def _high_range_pil(im: Image.Image) -> tuple[np.ndarray, OwnWindow, bool] | None:
    """:func:`read_high_range` for an opened PIL image; None unless it is 16-bit, 32-bit int or 32-bit float
    grayscale. A float file (e.g. CT in Hounsfield units) has no natural range: 'auto' uses its own percentiles."""
    if im.mode not in HIGH_RANGE_MODES:
        return None
    values = np.asarray(ImageOps.exif_transpose(im), dtype=np.float64)
    if im.mode == "F":
        finite = np.isfinite(values)
        if not finite.all():  # NaN / inf (e.g. outside a scan's field of view): the darkest value
            values = np.where(finite, values, values[finite].min() if finite.any() else 0.0)
        return values, None, False
    if im.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        return values, None, False  # 32-bit int beyond 0-65535 (e.g. signed HU): no format range, like float
    # The format's range for every file alike (not each file's own maximum), so a dark file stays darker than a
    # bright one; a set of 8-bit images stored in 16-bit files is found from a sample of the set (datasets.py)
    return values, (0.0, 65535.0), False


def narrow_16bit_max(files: list[Path], samples: int = 32, seed: int = 0) -> int | None:
    """The largest value in up to ``samples`` 16-bit integer PNG/TIFF files of ``files`` when it is at most 4095
    (8-, 10- or 12-bit data stored in 16 bits, which 'auto' maps by the full 0-65535 range and so loads nearly
    black), else None. DICOM (its own window) and unreadable files are not sampled; the files are decoded, so only files
    whose header says 16-bit are read whole."""
    rng = np.random.default_rng(seed)
    top, seen = 0, 0
    for i in np.sort(rng.permutation(len(files))[:samples]):
        f = files[i]
        if f.suffix.lower() in DICOM_EXTENSIONS:
            continue
        try:
            with Image.open(f) as im:
                if im.mode not in HIGH_RANGE_MODES or im.mode == "F":  # integer modes only
                    continue
                top, seen = max(top, int(np.asarray(im).max())), seen + 1
        except DECODE_ERRORS:
            continue
    return top if seen and top <= 4095 else None


def dicom_window_mix(files: list[Path], samples: int = 32, seed: int = 0) -> tuple[int, int]:
    """(with, without): how many of up to ``samples`` grayscale DICOM files of ``files`` carry their own window
    (VOI LUT or WindowCenter/Width) and how many do not (so 'auto' maps those by their own percentiles). Headers
    only; unreadable files are not counted."""
    dicoms = [f for f in files if f.suffix.lower() in DICOM_EXTENSIONS]
    if not dicoms:
        return 0, 0
    pydicom = _pydicom()
    rng = np.random.default_rng(seed)
    own = bare = 0
    for i in np.sort(rng.permutation(len(dicoms))[:samples]):
        try:
            ds = pydicom.dcmread(dicoms[i], stop_before_pixels=True)
        except Exception:  # a broken file is reported when it is decoded
            continue
        if _dicom_colour(ds):
            continue
        if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
            own += 1
        else:
            bare += 1
    return own, bare


def apply_window(values: np.ndarray, lo: float, hi: float, invert: bool = False) -> np.ndarray:
    """Map [lo, hi] linearly to uint8 0-255, clip outside; ``invert`` flips it (MONOCHROME1). Monotone: the order
    of intensities inside the window is kept."""
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    if invert:
        scaled = 1.0 - scaled
    return (scaled * 255 + 0.5).astype(np.uint8)


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    return lo, (hi if hi > lo else lo + 1.0)


def window_image(file: Path, window="auto") -> np.ndarray | None:
    """A high-range grayscale file as uint8 (H, W) through ``window`` (see :data:`WINDOW_HELP`; 'dataset' must be
    resolved to a (lo, hi) pair first, see :func:`dataset_window`); None for 8-bit and colour files."""
    raw = read_high_range(file)
    return None if raw is None else _windowed(raw, window)


def _windowed(raw: tuple[np.ndarray, OwnWindow, bool], window) -> np.ndarray:
    values, own, invert = raw
    if isinstance(window, tuple):
        lo, hi = window
    elif window == "auto" and callable(own):  # a DICOM VOI LUT or sigmoid window: already 0..1
        values, (lo, hi) = own(values), (0.0, 1.0)
    elif window == "auto" and own is not None:
        lo, hi = own
    elif window in ("auto", "file"):
        lo, hi = percentile_window(values)
    else:
        raise ValueError(f"window {window!r} must be resolved to (lo, hi) before decoding")
    return apply_window(values, lo, hi, invert)


def dataset_window(files: list[Path], samples: int = 256, pixels: int = 4096, seed: int = 0,
                   skip: bool = False) -> tuple[float, float]:
    """One 0.5-99.5 percentile window over up to ``samples`` of ``files`` (``pixels`` random values from each):
    every file is then mapped the same way, so intensity differences between files survive. Seeded, so every
    split and every run gets the same window. 8-bit and colour files are not sampled; unreadable ones are a
    :class:`DataError` unless ``skip`` (``--on-bad-file skip``), which leaves them out."""
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in np.sort(rng.permutation(len(files))[:samples])]
    pooled = []
    for f in chosen:
        try:
            raw = read_high_range(f)
        except DataError:
            if not skip:
                raise
            continue
        if raw is not None:
            flat = raw[0].ravel()
            pooled.append(flat[rng.integers(0, flat.size, min(pixels, flat.size))])
    if not pooled:
        raise DataError("window 'dataset' needs 16-bit PNG/TIFF, float TIFF or DICOM grayscale files; these are "
                        "8-bit or colour, which are used as they are")
    return percentile_window(np.concatenate(pooled))


def _dicom_colour(ds) -> bool:
    """Three samples per pixel (RGB, YBR), or one index per pixel into a colour palette (PALETTE COLOR)."""
    return (int(ds.get("SamplesPerPixel", 1)) == 3
            or str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR")


def _read_dicom_values(file: Path) -> tuple[np.ndarray, OwnWindow, bool] | None:
    return _dicom_high_range(*_dicom_pixels(file))


def _dicom_pixels(file: Path):
    """``(dataset, pixel array)`` of a single-frame DICOM file; a :class:`DataError` naming the file otherwise."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(file)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise DataError(f"{file} holds {frames} frames; vissl-lite reads one image per file. Split it into "
                            "single-frame files first (e.g. with pydicom), or leave it out")
        return ds, ds.pixel_array
    except DataError:
        raise
    except Exception as e:  # pydicom raises many types for broken files and missing pixel data
        raise DataError(f"cannot read DICOM {file} ({type(e).__name__}: {e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e


def _dicom_high_range(ds, arr: np.ndarray) -> tuple[np.ndarray, OwnWindow, bool] | None:
    """:func:`read_high_range` for a read DICOM dataset; None for colour."""
    from pydicom.pixels import apply_modality_lut

    if _dicom_colour(ds):
        return None
    values = apply_modality_lut(arr, ds).astype(np.float64)
    own = _dicom_own_window(ds)
    if own is None and int(ds.get("BitsStored", 16)) <= 8 and _identity_modality(ds):  # a display image as stored
        own = (0.0, float(2 ** int(ds.BitsStored) - 1))
    invert = str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1"
    return values, own, invert


def _dicom_own_window(ds) -> OwnWindow:
    """The file's own VOI transform (DICOM PS3.3 C.11.2), from modality values to display: its first VOI LUT; else
    its first window centre/width under its VOI LUT Function (LINEAR: ends at c - 0.5 -+ (w - 1) / 2; LINEAR_EXACT:
    c -+ w / 2; SIGMOID: 1 / (1 + exp(-4 (x - c) / w))). A linear window is a (lo, hi) pair, the others a function
    to 0..1. None without either, or with a width the function does not allow (< 1 for LINEAR, <= 0 otherwise)."""
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_voi

    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        first, entries = int(item.LUTDescriptor[1]), int(item.LUTDescriptor[0]) or 2**16
        table = apply_voi(np.arange(first, first + entries), ds).astype(np.float64)  # every entry, in order
        lo, span = float(table.min()), max(float(table.max() - table.min()), 1.0)
        return lambda v: (apply_voi(np.rint(v).astype(np.int64), ds) - lo) / span
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    centre, width = ds.WindowCenter, ds.WindowWidth
    centre = float(centre[0] if isinstance(centre, MultiValue) else centre)
    width = float(width[0] if isinstance(width, MultiValue) else width)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if not (np.isfinite(centre) and np.isfinite(width)) or width < (1 if function == "LINEAR" else 1e-12):
        return None
    if function == "SIGMOID":
        def sigmoid(v: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-4.0 * (v - centre) / width))
        return sigmoid
    if function == "LINEAR_EXACT":
        return centre - width / 2, centre + width / 2
    return centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2


def _identity_modality(ds) -> bool:
    return ("ModalityLUTSequence" not in ds and float(ds.get("RescaleSlope", 1) or 1) == 1
            and float(ds.get("RescaleIntercept", 0) or 0) == 0)


def read_dicom(file: Path, window="auto") -> np.ndarray:
    """One DICOM image as uint8 (H, W) (grayscale) or (H, W, 3) (colour), windowed for display:

    1. stored values -> modality values (rescale slope and intercept, or the modality LUT);
    2. ``window`` (see :data:`WINDOW_HELP`); by default the file's VOI LUT, or its first window centre/width, or
       (8 bits stored, no rescale) its stored levels as they are, or else its 0.5-99.5 percentile range, mapped
       linearly to 0-255 (values outside are clipped);
    3. MONOCHROME1 (higher = darker) is inverted so bright means dense for every file.

    Multi-frame files are refused: each frame would be a separate image. Colour files are scaled from their bit
    depth to 8 bits, PALETTE COLOR ones looked up in their palette first. The file is read once either way.
    """
    ds, arr = _dicom_pixels(file)
    raw = _dicom_high_range(ds, arr)
    if raw is not None:
        return _windowed(raw, window)
    if arr.ndim == 2:  # PALETTE COLOR: indices into the file's red, green and blue tables
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except Exception as e:  # a missing or malformed palette
            raise DataError(f"cannot apply the colour palette of DICOM {file} ({type(e).__name__}: {e}); remove or "
                            "replace the file, or pass --on-bad-file skip") from e
        top = float(np.iinfo(arr.dtype).max)  # the palette's entries are 8 or 16 bits
    else:  # RGB, or YBR converted to RGB by pydicom
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
    return np.clip(arr.astype(np.float64) / top * 255 + 0.5, 0, 255).astype(np.uint8)


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
                        f"relative to the CSV's folder{hint}")
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


def image_channels(file: Path) -> int:
    """1 for grayscale files (L, I;16, I, F, 1, LA; grayscale DICOM), else 3."""
    if file.suffix.lower() in DICOM_EXTENSIONS:
        try:
            ds = _pydicom().dcmread(file, stop_before_pixels=True)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"cannot read DICOM {file} ({e}); remove or replace the file, or pass --on-bad-file "
                            "skip") from e
        return 3 if _dicom_colour(ds) else 1
    try:
        with Image.open(file) as im:
            return 1 if im.mode in ("L", "LA", "1", *HIGH_RANGE_MODES) else 3
    except DECODE_ERRORS as e:
        raise DataError(f"cannot open image {file} ({e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e


def check_image(file: Path) -> None:
    """Raise DataError naming ``file`` unless it decodes completely (a header check alone misses truncated
    JPEGs)."""
    if file.suffix.lower() in DICOM_EXTENSIONS:
        read_dicom(file)
        return
    try:
        with Image.open(file) as im:
            im.load()
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode image {file} ({e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e


def decode_image(file: Path, size: int, channels: int, window="auto") -> torch.Tensor:
    """Decode one file to uint8 ``(channels, size, size)``: EXIF rotation applied, short side resized to ``size``
    (antialiased), centre crop. Grayscale files with more than 8 bits (DICOM, 16-bit PNG/TIFF) keep their values
    until this one windowing step, ``window`` (see :data:`WINDOW_HELP`), maps them to 8 bits."""
    mode = "L" if channels == 1 else "RGB"
    try:
        if file.suffix.lower() in DICOM_EXTENSIONS:
            im = Image.fromarray(read_dicom(file, window)).convert(mode)
        else:
            with Image.open(file) as im:  # opened once: 16-bit files are windowed, others converted
                raw = _high_range_pil(im)
                if raw is not None:
                    im = Image.fromarray(_windowed(raw, window)).convert(mode)
                else:
                    im = ImageOps.exif_transpose(im).convert(mode)
        arr = np.asarray(im, dtype=np.uint8)
    except DataError:  # already names the file and the fix (e.g. a multi-frame DICOM)
        raise
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode image {file} ({e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)  # (C, H, W)
    return resize_center_crop(t[None], size)[0]


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size): resize the short side to ``size``, centre-crop."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    y = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    y = y[..., top:top + size, left:left + size]
    return y.round_().clamp_(0, 255).to(torch.uint8)
