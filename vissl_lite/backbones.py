"""Backbones come from timm by name; this is the one module that knows timm internals."""

from __future__ import annotations

import difflib

import timm
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def is_vit(model: nn.Module) -> bool:
    return isinstance(model, VisionTransformer)


def create_backbone(name: str, in_chans: int = 3, img_size: int = 224, small_input: bool | None = None,
                    patch_size: int = 0, **kwargs) -> nn.Module:
    """A timm model with ``num_classes=0`` (``model(x)`` returns pooled features of size ``model.num_features``).

    Args:
        name: any timm model name; ResNet and ViT families get the small-input mode.
        in_chans: input channels (1 for grayscale).
        img_size: input side; ViTs are built for it.
        small_input: for images <= 64 px (None: decide from ``img_size``). ResNet: the 7x7 stride-2 stem and
            max-pool become one 3x3 stride-1 conv (as for CIFAR in the SimCLR paper). ViT: patch size 4 unless
            ``patch_size`` says otherwise.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``, ``global_pool``).
    """
    check_backbone_name(name)
    small = img_size <= 64 if small_input is None else small_input
    if is_vit_name(name):
        if small or patch_size:
            kwargs.setdefault("patch_size", patch_size or 4)
        kwargs.setdefault("img_size", img_size)
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    if small and isinstance(model, ResNet):
        _small_resnet_stem(model)
    elif small and not is_vit(model) and small_input:
        raise ValueError(f"small_input is implemented for timm ResNet and ViT models, not '{name}' "
                         f"({type(model).__name__}); pass --no-small-input")
    return model


def is_vit_name(name: str) -> bool:
    """Whether timm model ``name`` is a VisionTransformer, told from its entrypoint's module before it is built
    (ViTs need img_size at build time)."""
    return timm.models.model_entrypoint(name).__module__.endswith(("vision_transformer", "deit"))


def check_backbone_name(name: str) -> None:
    """Raise with the closest timm names when ``name`` is not a timm model."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.6)
        raise ValueError(f"unknown timm model '{name}'. Closest names: {', '.join(close) or 'none'}; "
                         "see timm.list_models()")


def _small_resnet_stem(model: ResNet) -> None:
    """Replace the ImageNet stem with a 3x3 stride-1 conv and drop the max-pool (keeps a 32 px image at 32x32)."""
    stem = model.conv1
    if isinstance(stem, nn.Conv2d):
        model.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, 3, 1, 1, bias=False)
    else:  # deep / tiered stems (resnet*d, resnet*t): first conv already 3x3, make it stride 1
        first = stem[0]
        stem[0] = nn.Conv2d(first.in_channels, first.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    for info in model.feature_info:  # keep timm's stride metadata true: the stem no longer downsamples by 4
        info["reduction"] = max(1, info["reduction"] // 4)


def feature_pooling(model: nn.Module) -> str:
    """How ``model(x)`` pools its features, stated in every evaluation protocol."""
    if is_vit(model):
        pool = model.global_pool or "none"
        return {"token": "cls token", "avg": "mean of patch tokens"}.get(pool, pool)
    pool = getattr(model, "global_pool", None)
    kind = getattr(pool, "pool_type", None) or "avg"
    return f"global {kind} pool of the last feature map"


def in_chans_of(model: nn.Module) -> int:
    """Input channels: the first 4-D weight is the stem conv or the patch embedding."""
    return next(p.shape[1] for p in model.parameters() if p.ndim == 4)

