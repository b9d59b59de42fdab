"""Augmentation recipes: batched modules that run on the device and return a list of views."""

from __future__ import annotations

from torch import nn

from vissl_lite.augment.views import CropFlipViews, EvalView, SimCLRViews, default_stats

AUGMENTS = {"simclr": SimCLRViews, "crop_flip": CropFlipViews, "eval": EvalView}


def build_augment(name: str, size: int, channels: int, mean=(), std=(), **kwargs) -> nn.Module:
    """Build recipe ``name``; unknown names and unknown keyword arguments are errors that list what is valid."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augmentation '{name}'. Valid: {', '.join(AUGMENTS)}")
    try:
        return AUGMENTS[name](size=size, channels=channels, mean=tuple(mean), std=tuple(std), **kwargs)
    except TypeError as e:
        import inspect

        valid = [p for p in inspect.signature(AUGMENTS[name]).parameters if p not in ("size", "channels")]
        raise ValueError(f"bad augment_args for '{name}' ({e}). Valid: {', '.join(valid)}") from e


__all__ = ["AUGMENTS", "CropFlipViews", "EvalView", "SimCLRViews", "build_augment", "default_stats"]
