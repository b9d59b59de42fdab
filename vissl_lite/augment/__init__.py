"""Augmentation recipes: batched modules that run on the device and return a list of views."""

from __future__ import annotations

import inspect

from torch import nn

from vissl_lite.augment.views import CropFlipViews, EvalView, SimCLRViews, default_stats

AUGMENTS = {"simclr": SimCLRViews, "crop_flip": CropFlipViews, "eval": EvalView}


def check_args(name: str, kwargs: dict) -> None:
    """Raise ValueError naming unknown recipes or keyword arguments and listing the valid ones. size, channels,
    mean and std come from the run config, not from augment_args."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augmentation '{name}'. Valid: {', '.join(AUGMENTS)}")
    valid = [p for p in inspect.signature(AUGMENTS[name]).parameters if p not in ("size", "channels", "mean", "std")]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown augment_args for '{name}': {', '.join(unknown)}. Valid: {', '.join(valid)}")


def build_augment(name: str, size: int, channels: int, mean=(), std=(), **kwargs) -> nn.Module:
    """Build recipe ``name``; unknown names and unknown keyword arguments are errors that list what is valid."""
    check_args(name, kwargs)
    return AUGMENTS[name](size=size, channels=channels, mean=tuple(mean), std=tuple(std), **kwargs)


__all__ = ["AUGMENTS", "CropFlipViews", "EvalView", "SimCLRViews", "build_augment", "check_args", "default_stats"]
