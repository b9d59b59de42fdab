"""``vissl-lite export``: a run's backbone as a safetensors file that ``timm.create_model`` loads, with the settings
that rebuild it (timm arguments, normalisation, window) in its metadata and in the printed loading code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vissl_lite import __version__
from vissl_lite.backbones import in_chans_of
from vissl_lite.config import RunConfig
from vissl_lite.runs import load_run


def timm_kwargs(cfg: RunConfig, in_chans: int) -> dict | None:
    """The ``timm.create_model`` keyword arguments that rebuild this run's backbone, or None when timm cannot
    express it (the small-input ResNet stem)."""
    from vissl_lite.backbones import is_resnet_name, is_vit_name

    small = cfg.image_size <= 64 if cfg.small_input is None else cfg.small_input
    kwargs: dict = {"in_chans": in_chans}
    if is_vit_name(cfg.backbone):
        if small or cfg.patch_size:
            kwargs["patch_size"] = cfg.patch_size or 4
        kwargs["img_size"] = cfg.image_size
    elif small and is_resnet_name(cfg.backbone):
        return None  # only ResNets get the small-input stem, which timm.create_model cannot build
    return kwargs


def export_backbone(run: str | Path, out: str | Path) -> dict:
    """Write the run's backbone weights as safetensors (atomically), with the settings needed to rebuild it in
    the file's metadata. ``out`` may be a folder (the file is ``backbone.safetensors`` in it): an existing one, or
    one written with a trailing '/' (created, as ``reconstruct --out`` creates one); a file must end in
    ``.safetensors``, the suffix timm reads the format from. Returns ``{"file", "backbone", "timm_kwargs",
    "tensors", "mean", "std", "in_chans", "image_size", "window"}``."""
    from safetensors.torch import save_file

    folder = str(out).endswith(("/", "\\"))  # Path() drops the trailing separator that says "a folder"
    out = Path(out)
    if folder or out.is_dir():
        out = out / "backbone.safetensors"
    if out.suffix != ".safetensors":  # also keeps a typo from replacing the run's own checkpoint.pt
        raise ValueError(f"--out {out}: the export is a safetensors file; name it {out.stem}.safetensors (timm "
                         "reads any other suffix with torch.load and fails)")
    cfg, model, ckpt = load_run(run)
    backbone = model.backbone
    in_chans = in_chans_of(backbone)
    kwargs = timm_kwargs(cfg, in_chans)
    from vissl_lite.augment import default_stats

    mean, std = default_stats(in_chans, cfg.mean, cfg.std)  # what the run normalised with (cfg's may be unset)
    window = str(cfg.window) if _reads_image_files(cfg.data) else "n/a (8-bit array data)"
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    meta = {"format": "pt", "vissl_lite": __version__, "backbone": cfg.backbone, "method": cfg.method,
            "step": str(ckpt["step"]), "image_size": str(cfg.image_size), "in_chans": str(in_chans),
            "small_input": json.dumps(cfg.small_input), "patch_size": str(cfg.patch_size),
            "timm_kwargs": json.dumps(kwargs), "mean": json.dumps(mean), "std": json.dumps(std),
            "window": window}  # how files of more than 8 bits were mapped to 0-255 before the backbone
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": str(out), "backbone": cfg.backbone, "timm_kwargs": kwargs, "tensors": len(state),
            "mean": [round(m, 4) for m in mean], "std": [round(v, 4) for v in std], "in_chans": in_chans,
            "image_size": cfg.image_size, "window": window}


def _reads_image_files(spec: str) -> bool:
    """Whether ``spec`` is image files (a folder or labels CSV), which --window applies to, rather than arrays of
    8-bit images (npz, CIFAR, idx, shapes), which it does not. Data no longer there counts as files."""
    from vissl_lite.data import DataError
    from vissl_lite.data.datasets import parse_spec

    try:
        return parse_spec(spec)[0] in ("folder", "csv")
    except DataError:
        return True


def how_to_load(info: dict) -> str:
    """What ``vissl-lite export`` prints after writing ``info["file"]``: the exact ``timm.create_model`` call (or,
    for the small-input ResNet stem, the vissl_lite lines) with the run's channels, size and normalisation, and
    the run's --window when it mapped files of more than 8 bits."""
    c, size, mean, std = info["in_chans"], info["image_size"], tuple(info["mean"]), tuple(info["std"])
    if info["timm_kwargs"] is None:
        text = ("This backbone uses the small-input ResNet stem, which timm.create_model cannot build. Load it "
                "with:\n"
                "  from vissl_lite.backbones import create_backbone, load_weights_file\n"
                f"  model = create_backbone({info['backbone']!r}, in_chans={c}, img_size={size}, small_input=True)\n"
                f"  load_weights_file(model, {info['file']!r})\n"
                f"and feed it {c}-channel {size} px images scaled to [0, 1], normalised with mean={mean}, std={std}.")
    else:
        extra = "".join(f", {k}={v!r}" for k, v in info["timm_kwargs"].items())
        text = ("Load it with timm:\n  import timm\n"
                f"  model = timm.create_model({info['backbone']!r}, pretrained=True, num_classes=0{extra},\n"
                f"                            pretrained_cfg_overlay=dict(file={info['file']!r}, mean={mean}, "
                f"std={std},\n"
                f"                                input_size={(c, size, size)}, crop_pct=1.0, "
                "interpolation='bilinear'))\n"
                "timm.data.resolve_model_data_config(model) then gives the run's own preprocessing (resize the "
                "short side, centre crop, normalise).")
    if info["window"] not in ("auto", "None") and not info["window"].startswith("n/a"):
        text += (f"\nThe run mapped raw values of files with more than 8 bits to 0-255 with --window "
                 f"{info['window']} (DICOM in modality values, e.g. HU after the rescale slope/intercept; other "
                 "files in their stored values); map new images the same way first (the window is in the file's "
                 "metadata).")
    return text
