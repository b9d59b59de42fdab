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


def is_resnet_name(name: str) -> bool:
    """Whether timm model ``name`` is built by timm's ResNet module (the models the small-input stem applies to)."""
    return timm.models.model_entrypoint(name).__module__.endswith(".resnet")


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



def describe_load(info: dict) -> str:
    """One console line for :func:`load_weights_file`'s result."""
    skipped = info["skipped"]
    more = f", {len(skipped) - 1} more" if len(skipped) > 1 else ""
    # tensors of the backbone the file has no entry for (e.g. resnet18 weights into a resnet34); a BatchNorm step
    # counter is bookkeeping, not a weight
    named = {s.split(" ")[0] for s in skipped}
    absent = [k for k in info.get("missing", []) if k not in named and not k.endswith("num_batches_tracked")]
    return (f"started from {info['file']}: {info['loaded']} tensors loaded"
            + (f", {len(skipped)} skipped ({skipped[0]}{more}; they keep their random init)" if skipped else "")
            + (f", {len(absent)} of the backbone's tensors not in the file ({', '.join(absent[:3])}"
               f"{', ...' if len(absent) > 3 else ''}; they keep their random init: does --backbone name the "
               "model the weights belong to?)" if absent else ""))


def load_weights_file(model: nn.Module, path: str) -> dict:
    """Load a local timm weights file (safetensors or a torch state dict, e.g. ImageNet weights the user
    downloaded) into backbone ``model``, adapting what can be adapted and saying what could not.

    - the first conv / patch embedding is summed across channels for 3 -> 1 (timm's ``adapt_input_conv``) or
      repeated and divided by the channel count for 1 -> 3;
    - ViT position embeddings and patch embeddings are resampled to the model's grid (timm's checkpoint filter);
    - classifier weights and anything else the backbone lacks are dropped;
    - a tensor whose shape still differs (e.g. the 7x7 ImageNet stem against the 3x3 small-input stem) is skipped.

    Returns:
        ``{"file", "loaded", "skipped", "missing"}`` (names), for the run's metrics.

    Raises:
        ValueError: the file does not hold weights for this architecture (most tensors would be missing).
    """
    from timm.models import adapt_input_conv
    from timm.models import load_state_dict as timm_load_state_dict

    try:
        state = timm_load_state_dict(str(path), weights_only=True)
    except Exception as e:  # a missing, corrupt or pickled-object file
        raise ValueError(f"cannot read weights file {path} ({type(e).__name__}: {str(e)[:200]}); pass a timm "
                         "state dict saved as .safetensors, .pth or .bin") from e
    for prefix in ("module.", "backbone."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    own = model.state_dict()
    first = next(k for k, v in own.items() if v.ndim == 4)  # stem conv or patch embedding
    if first in state and state[first].shape[1] != own[first].shape[1]:
        source, target = state[first].shape[1], own[first].shape[1]
        if source == 1:  # timm's adapt_input_conv leaves 1 -> 3 as it is; repeat, scaled so a gray image
            # copied to every channel gives the activations the 1-channel stem gave
            state[first] = state[first].float().repeat(1, target, 1, 1) / target
        else:
            try:
                state[first] = adapt_input_conv(target, state[first].float())
            except NotImplementedError:  # e.g. 4 -> 2 channels: left to the shape check below (skipped)
                pass
    if is_vit(model):
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, model)
    loaded, skipped = {}, []
    for k, v in state.items():
        if k not in own:
            continue
        if v.shape != own[k].shape:
            skipped.append(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}")
            continue
        loaded[k] = v
    missing = [k for k in own if k not in loaded]
    if len(loaded) < 0.5 * len(own):
        raise ValueError(f"{path} does not fit this backbone: {len(loaded)} of {len(own)} tensors match (first "
                         f"missing: {', '.join(missing[:4])}). Check that --backbone names the model the weights "
                         "belong to")
    model.load_state_dict(loaded, strict=False)
    return {"file": str(path), "loaded": len(loaded), "skipped": skipped, "missing": missing}
