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
SSL_METHODS = tuple(m for m in METHODS if m != "classifier")


def unknown_method(name: str) -> str:
    return f"unknown method '{name}'. Valid: {', '.join(SSL_METHODS)}"  # classifier: finetune sets it itself


def check_args(name: str, kwargs: dict) -> None:
    """Raise ValueError naming an unknown method or unknown constructor arguments and listing the valid ones."""
    if name not in METHODS:
        raise ValueError(unknown_method(name))
    valid = [p for p in inspect.signature(METHODS[name]).parameters if p != "backbone"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown method_args for '{name}': {', '.join(unknown)}. Valid: {', '.join(valid)}")
    params = inspect.signature(METHODS[name]).parameters
    for key, value in kwargs.items():
        default = params[key].default
        kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(type(default))
        if kinds and (not isinstance(value, kinds) or (isinstance(value, bool) and type(default) is not bool)):
            want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(default)]
            raise ValueError(f"method_args {key} for '{name}' must be {want} (default {default!r}), got {value!r}")


def build_method(name: str, backbone: nn.Module, **kwargs) -> nn.Module:
    """``METHODS[name](backbone, **kwargs)``; unknown names or arguments raise and list what is valid."""
    check_args(name, kwargs)
    try:
        return METHODS[name](backbone, **kwargs)
    except (AssertionError, RuntimeError) as e:  # e.g. timm's attention: dim not divisible by the head count
        raise ValueError(f"cannot build {name} with method_args {kwargs or '{}'} on {type(backbone).__name__}: "
                         f"{e or type(e).__name__}") from e


__all__ = ["Classifier", "DAE", "MAE", "METHODS", "SimCLR", "build_method", "check_args"]
