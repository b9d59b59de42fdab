"""Array-format datasets: MedMNIST-style npz, CIFAR python batches and MNIST idx files.

Each reader returns ``{split: (images (N, H, W[, C]) uint8, labels or None)}``; no tensors, no resizing.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from vissl_lite.data.readers import DataError

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
