"""Fixtures that write small datasets in every supported on-disk format."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def pytest_configure(config):
    torch.set_num_threads(min(2, torch.get_num_threads()))


def class_images(n_per_class: int, classes: int, size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Images whose mean brightness encodes the class, so a probe can learn it. (N, H, W[, 3]) uint8."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    base = (labels * (200 // max(1, classes - 1)) + 20)[:, None, None]
    shape = (len(labels), size, size) + ((3,) if channels == 3 else ())
    noise = rng.integers(0, 30, shape)
    img = base[..., None] + noise if channels == 3 else base + noise
    return np.clip(img, 0, 255).astype(np.uint8), labels


@pytest.fixture
def npz_gray(tmp_path: Path) -> Path:
    x, y = class_images(12, 3, 20, 1)
    path = tmp_path / "gray.npz"
    np.savez(path, train_images=x, train_labels=y[:, None], val_images=x[:9], val_labels=y[:9, None],
             test_images=x[-9:], test_labels=y[-9:, None])
    return path


@pytest.fixture
def npz_rgb_noval(tmp_path: Path) -> Path:
    x, y = class_images(20, 4, 16, 3)
    path = tmp_path / "rgb.npz"
    np.savez(path, train_images=x, train_labels=y[:, None], test_images=x[:8], test_labels=y[:8, None])
    return path


@pytest.fixture
def png_tree(tmp_path: Path) -> Path:
    """root/<class>/*.png, 3 classes x 10 RGB images of varying size."""
    x, y = class_images(10, 3, 24, 3)
    root = tmp_path / "tree"
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / f"class_{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).resize((24 + i % 5, 24)).save(d / f"{i}.png")
    return root


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 10) for i in range(1, 6)] + [("test_batch", 10)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n))
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    root = tmp_path / "fashion"
    root.mkdir()
    x, y = class_images(6, 10, 28, 1)
    write_idx(root / "train-images-idx3-ubyte.gz", x)
    write_idx(root / "train-labels-idx1-ubyte.gz", y)
    write_idx(root / "t10k-images-idx3-ubyte.gz", x[:20])
    write_idx(root / "t10k-labels-idx1-ubyte.gz", y[:20])
    return root


def clustered_features(classes: int, dim: int, spread: float, seed: int = 0):
    """A sampler of (features, labels): Gaussian clusters around random centres ``spread`` apart (separable)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * spread

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % classes
        return centers[y] + torch.randn(n, dim, generator=g), y

    return split


def crash_pretrain(monkeypatch, step: int, run) -> None:
    """Run ``run()`` with the training loop raising KeyboardInterrupt when it reaches ``step`` (a simulated kill:
    nothing is written after the last checkpoint), then restore the loop."""
    import vissl_lite.train as train

    real = train.lr_at

    def crash(s, *args):
        if s == step:
            raise KeyboardInterrupt("simulated crash")
        return real(s, *args)

    monkeypatch.setattr(train, "lr_at", crash)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(train, "lr_at", real)
