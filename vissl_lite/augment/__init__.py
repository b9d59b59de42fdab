"""Augmentation recipes: batched modules that run on the device and return a list of views."""

from __future__ import annotations

import inspect

from torch import nn

from vissl_lite.augment.medical import FundusViews, MedicalViews, PathologyViews, RadiologyViews
from vissl_lite.augment.views import CropFlipViews, EvalView, SimCLRViews, default_stats

AUGMENTS = {"simclr": SimCLRViews, "crop_flip": CropFlipViews, "eval": EvalView, "radiology": RadiologyViews,
            "pathology": PathologyViews, "fundus": FundusViews}
PRESETS = ("radiology", "pathology", "fundus")  # medical presets: as many views as the method needs by default


def check_args(name: str, kwargs: dict) -> None:
    """Raise ValueError naming unknown recipes or keyword arguments and listing the valid ones. size, channels,
    mean and std come from the run config, not from augment_args."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augmentation '{name}'. Valid: {', '.join(AUGMENTS)}")
    valid = [p for p in inspect.signature(AUGMENTS[name]).parameters if p not in ("size", "channels", "mean", "std")]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown augment_args for '{name}': {', '.join(unknown)}. Valid: {', '.join(valid)}")
    for key, value in kwargs.items():
        if key.startswith("p_") and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f"augment_args {key}={value!r} for '{name}' is a probability: give a number in [0, 1]")
    scale = kwargs.get("scale")
    pair = isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale)
    if scale is not None and not (pair and 0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"augment_args scale={scale!r} for '{name}' is the crop's share of the image, "
                         "[min, max] with 0 < min <= max <= 1, e.g. scale=[0.2,1.0]")


def build_augment(name: str, size: int, channels: int, mean=(), std=(), views: int | None = None,
                  **kwargs) -> nn.Module:
    """Build recipe ``name``; unknown names and unknown keyword arguments are errors that list what is valid.
    ``views``: the method's number of views, used by the medical presets unless ``n_views`` is given."""
    check_args(name, kwargs)
    if name in PRESETS and views and "n_views" not in kwargs:
        kwargs = {**kwargs, "n_views": views}
    return AUGMENTS[name](size=size, channels=channels, mean=tuple(mean), std=tuple(std), **kwargs)


__all__ = ["AUGMENTS", "PRESETS", "CropFlipViews", "EvalView", "FundusViews", "MedicalViews", "PathologyViews",
           "RadiologyViews", "SimCLRViews", "build_augment", "check_args", "default_stats"]
