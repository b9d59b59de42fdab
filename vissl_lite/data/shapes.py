"""The built-in synthetic dataset: ten shape classes under nuisance variation.

A class is a shape's structure (disk, ring, square, frame, triangle, plus, bars, flower, crescent, L). Everything
else is drawn at random per image and carries no label information: foreground and background colour (from a
ten-colour palette with a little drift, so colours repeat across images and cannot identify one), a weak background
gradient, position, scale, rotation (+-30 degrees), a few small distractor blobs and pixel noise. Colour dominates
the pixels, so a random network's pooled features mostly encode nuisances (its linear probe sits near chance),
while crop- and colour-invariant training has to find the shape. Rendering is vectorised numpy over signed
distance functions with a one-pixel anti-aliased edge: the three splits take about three seconds.
"""

from __future__ import annotations

import functools

import numpy as np

CLASS_NAMES = ("disk", "ring", "square", "frame", "triangle", "plus", "bars", "flower", "crescent", "ell")
SPLIT_SIZES = {"train": 5000, "val": 1000, "test": 2000}
PALETTE = np.array([[0.9, 0.1, 0.1], [0.1, 0.6, 0.1], [0.15, 0.25, 0.9], [0.95, 0.85, 0.1], [0.6, 0.1, 0.7],
                    [0.1, 0.8, 0.8], [0.95, 0.55, 0.1], [0.95, 0.95, 0.95], [0.08, 0.08, 0.08], [0.5, 0.5, 0.5]])
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def _box(px: np.ndarray, py: np.ndarray, hx: float, hy: float) -> np.ndarray:
    dx, dy = np.abs(px) - hx, np.abs(py) - hy
    outside = np.hypot(np.maximum(dx, 0), np.maximum(dy, 0))
    return outside + np.minimum(np.maximum(dx, dy), 0)


def _sdf(cls: int, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) of shape ``cls`` in its unit frame (shape fits in radius ~0.9)."""
    r = np.hypot(px, py)
    if cls == 0:  # disk
        return r - 0.8
    if cls == 1:  # ring
        return np.abs(r - 0.62) - 0.2
    if cls == 2:  # square
        return _box(px, py, 0.68, 0.68)
    if cls == 3:  # frame (hollow square)
        return np.abs(_box(px, py, 0.62, 0.62)) - 0.15
    if cls == 4:  # equilateral triangle: intersection of three half-planes, normals at 90, 210 and 330 degrees
        normals = [np.deg2rad(a) for a in (90, 210, 330)]
        return np.maximum.reduce([px * np.cos(a) + py * np.sin(a) - 0.5 for a in normals])
    if cls == 5:  # plus
        return np.minimum(_box(px, py, 0.85, 0.2), _box(px, py, 0.2, 0.85))
    if cls == 6:  # three parallel bars
        return np.minimum.reduce([_box(px, py - o, 0.8, 0.14) for o in (-0.55, 0.0, 0.55)])
    if cls == 7:  # five-petal flower
        phi = np.arctan2(py, px)
        return r - (0.55 + 0.3 * np.cos(5 * phi))
    if cls == 8:  # crescent
        return np.maximum(r - 0.8, -(np.hypot(px - 0.42, py) - 0.62))
    if cls == 9:  # L shape
        return np.minimum(_box(px + 0.45, py, 0.2, 0.8), _box(px - 0.05, py + 0.6, 0.7, 0.2))
    raise ValueError(f"no shape class {cls}")


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def make_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` images deterministically from ``seed``.

    Returns:
        images: uint8 array (n, 3, size, size); labels: int64 array (n,) in [0, 10), balanced.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASS_NAMES)
    rng.shuffle(labels)
    lin = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    gy, gx = np.meshgrid(lin, lin, indexing="ij")  # (S, S) in [-1, 1]
    pixel = 2.0 / size

    # Colours come from a small palette (plus a little per-image drift): many images in a batch share colours, so
    # colour varies freely but cannot single out one image, and contrastive training has to look at the shape.
    def palette_colour(k: int) -> np.ndarray:
        pick = PALETTE[rng.integers(0, len(PALETTE), k)] + rng.normal(0, 0.04, (k, 3))
        return np.clip(pick, 0, 1).astype(np.float32)[:, None, None, :]

    # Background: a palette colour with a weak gradient towards another along a random direction.  # (n,S,S,3)
    c0, c1 = palette_colour(n), palette_colour(n)
    ang = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    t = (np.cos(ang) * gx + np.sin(ang) * gy) * 0.5 + 0.5
    img = c0 + 0.3 * (c1 - c0) * t[..., None]

    # Distractor clutter: 0-2 small blobs of random colour anywhere, shared across classes.
    for _ in range(2):
        on = rng.uniform(0, 1, (n, 1, 1)) < 0.4
        cx, cy = rng.uniform(-1, 1, (2, n, 1, 1)).astype(np.float32)
        rad = rng.uniform(0.06, 0.14, (n, 1, 1)).astype(np.float32)
        alpha = np.clip(0.5 - (np.hypot(gx - cx, gy - cy) - rad) / pixel, 0, 1) * on
        col = rng.uniform(0, 1, (n, 1, 1, 3)).astype(np.float32)
        img = img * (1 - alpha[..., None]) + col * alpha[..., None]

    # Foreground colour, pushed away from the background's brightness so the shape stays visible.
    fg = palette_colour(n)
    bg_luma = _luma((c0 + 0.15 * (c1 - c0))[:, 0, 0])
    for _ in range(20):  # redraw foregrounds that would be hard to see against their background
        too_close = np.abs(_luma(fg[:, 0, 0]) - bg_luma) < 0.2
        if not too_close.any():
            break
        fg[too_close] = palette_colour(int(too_close.sum()))

    # Pose: centre, scale (radius in image units), rotation.
    cx, cy = rng.uniform(-0.25, 0.25, (2, n, 1, 1)).astype(np.float32)
    scale = rng.uniform(0.45, 0.75, (n, 1, 1)).astype(np.float32)
    theta = rng.uniform(-np.pi / 6, np.pi / 6, (n, 1, 1)).astype(np.float32)  # +-30 degrees
    dx, dy = (gx - cx) / scale, (gy - cy) / scale
    px = np.cos(theta) * dx + np.sin(theta) * dy
    py = -np.sin(theta) * dx + np.cos(theta) * dy
    alpha = np.empty((n, size, size), dtype=np.float32)
    for c in range(len(CLASS_NAMES)):
        idx = labels == c
        # distances in the unit frame -> pixels, then a one-pixel linear ramp for anti-aliasing
        alpha[idx] = np.clip(0.5 - _sdf(c, px[idx], py[idx]) * scale[idx] / pixel, 0, 1)
    img = img * (1 - alpha[..., None]) + fg * alpha[..., None]

    noise = rng.uniform(0.0, 0.06, (n, 1, 1, 1)).astype(np.float32)
    img = img + noise * rng.standard_normal(img.shape, dtype=np.float32)
    images = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), labels.astype(np.int64)


@functools.lru_cache(maxsize=6)
def shapes_split(split: str, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/val/test splits of the built-in set (5,000 / 1,000 / 2,000 images), rendered once per
    process (pretraining and the probes share them). Treat the arrays as read-only."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split '{split}' for the shapes set; valid: {', '.join(SPLIT_SIZES)}")
    return make_shapes(SPLIT_SIZES[split], size=size, seed=seed * 10 + _SPLIT_OFFSET[split] + 1_000)
