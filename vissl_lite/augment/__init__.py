"""Augmentation recipes: batched modules that run on the device and return a list of views."""

from __future__ import annotations

import inspect

from torch import nn

from vissl_lite.augment.medical import FundusViews, MedicalViews, PathologyViews, RadiologyViews
from vissl_lite.augment.views import CropFlipViews, EvalView, SimCLRViews, default_stats

AUGMENTS = {"simclr": SimCLRViews, "crop_flip": CropFlipViews, "eval": EvalView, "radiology": RadiologyViews,
            "pathology": PathologyViews, "fundus": FundusViews}
PRESETS = ("radiology", "pathology", "fundus")  # medical presets: as many views as the method needs by default


# Ranges of the numeric arguments, checked before any work: (low, high, what the number is). Outside them a run
# would fail inside the training loop (a negative noise std) or silently do something else (a brightness factor
# below zero, a display window whose ends cross). Probabilities (p_*) are [0, 1]; pairs are below.
_RANGES = {
    "strength": (0.0, 2.5, "the colour-jitter strength (hue moves by 0.2 x strength, at most 0.5)"),
    "brightness": (0.0, 1.0, "a factor drawn in [1 - b, 1 + b]"),
    "contrast": (0.0, 1.0, "a factor drawn in [1 - c, 1 + c]"),
    "window": (0.0, 0.49, "how far each end of the display window moves (0.5 or more can cross the ends)"),
    "degrees": (0.0, 180.0, "the largest rotation, in degrees"),
    "translate": (0.0, 1.0, "the largest shift, as a share of the side"),
    "stain": (0.0, 1.0, "the stain jitter sigma (published ranges are 0.01-0.1)"),
    "noise": (0.0, 1.0, "the Gaussian noise std, in [0, 1] intensity units"),
    "elastic_alpha": (0.0, 100.0, "the elastic displacement strength"),
}
# [min, max] pairs: crop scale and aspect ratio, affine zoom and gamma
_PAIRS = {"scale": (0.0, 1.0, "the crop's share of the image"), "ratio": (0.0, None, "the crop's aspect ratio"),
          "affine_scale": (0.0, None, "the affine zoom"), "gamma": (0.0, None, "the gamma exponent")}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_args(name: str, kwargs: dict) -> None:
    """Raise ValueError naming unknown recipes or keyword arguments (listing the valid ones) or a value of the
    wrong type or out of range (saying what it means), so a bad value stops the run before any work. size,
    channels, mean and std come from the run config, not from augment_args."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augmentation '{name}'. Valid: {', '.join(AUGMENTS)}")
    params = {k: p for k, p in inspect.signature(AUGMENTS[name]).parameters.items()
              if k not in ("size", "channels", "mean", "std")}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"unknown augment_args for '{name}': {', '.join(unknown)}. Valid: {', '.join(params)}")
    for key, value in kwargs.items():
        where, default = f"augment_args {key}={value!r} for '{name}'", params[key].default
        if key.startswith("p_"):
            if not (_number(value) and 0 <= value <= 1):
                raise ValueError(f"{where} is a probability: give a number in [0, 1]")
        elif key in _PAIRS:
            low, high, what = _PAIRS[key]
            pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_number, value))
            if not (pair and low < value[0] <= value[1] and (high is None or value[1] <= high)):
                bound = f"{low:g} < min <= max" + (f" <= {high:g}" if high is not None else "")
                example = [round(v, 3) for v in default]
                raise ValueError(f"{where} is {what}, [min, max] with {bound}, e.g. {key}={example}")
        elif key in _RANGES:
            low, high, what = _RANGES[key]
            if not (_number(value) and low <= value <= high):
                raise ValueError(f"{where} is {what}: give a number in [{low:g}, {high:g}] (default {default!r})")
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{where}: give true or false")
        elif key == "n_views" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{where} is the number of views per image: give an integer >= 1")


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
