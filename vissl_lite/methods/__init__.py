"""Self-supervised methods, and the supervised classifier that fine-tuning trains.

Adding a method = one file + one line here + one recipe in configs/."""

from __future__ import annotations

import inspect

from torch import nn

from vissl_lite.methods.classifier import Classifier
from vissl_lite.methods.dae import DAE
from vissl_lite.methods.mae import MAE
from vissl_lite.methods.simclr import SimCLR

METHODS = {"simclr": SimCLR, "mae": MAE, "dae": DAE, "classifier": Classifier}  # classifier: fine-tuning


def check_args(name: str, kwargs: dict) -> None:
    """Raise ValueError naming an unknown method or unknown constructor arguments and listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'. Valid: {', '.join(METHODS)}")
    valid = [p for p in inspect.signature(METHODS[name]).parameters if p != "backbone"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown method_args for '{name}': {', '.join(unknown)}. Valid: {', '.join(valid)}")


def build_method(name: str, backbone: nn.Module, **kwargs) -> nn.Module:
    """``METHODS[name](backbone, **kwargs)``; unknown names or arguments raise and list what is valid."""
    check_args(name, kwargs)
    return METHODS[name](backbone, **kwargs)


__all__ = ["Classifier", "DAE", "MAE", "METHODS", "SimCLR", "build_method", "check_args"]
