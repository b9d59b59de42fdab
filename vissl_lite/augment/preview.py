"""``vissl-lite preview``: what an augmentation recipe does to your own images, as a grid, before any training."""

from __future__ import annotations

from pathlib import Path

import torch

from vissl_lite.augment import EvalView, build_augment, default_stats
from vissl_lite.config import RunConfig


@torch.no_grad()
def preview_augment(cfg: RunConfig, n: int = 8, out: str | Path | None = None, split: str = "train") -> Path:
    """Draw the first ``n`` images of ``split`` as the model sees them at evaluation (top row) and each view that
    ``cfg.augment`` (with ``cfg.augment_args``) makes of them for ``cfg.method``, de-normalised, seeded by
    ``cfg.seed``. ``out`` defaults to ``augment_<recipe>.png`` in the working folder."""
    from vissl_lite.data import data_name, load_split
    from vissl_lite.eval.reconstruct import output_png, sample_images, save_image_rows
    from vissl_lite.methods import METHODS

    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    # the channel count the run would train with: the data's own unless --in-chans (a folder is listed, not decoded);
    # and what pretraining would say about the files' bit depth and windows (e.g. 12-bit data in 16-bit files
    # loading nearly black), since a dark grid alone does not say why
    train = load_split(cfg.data, "train", cfg.image_size, 0, cfg.val_fraction, "stream", progress=False,
                       on_bad_file=cfg.on_bad_file, window=cfg.window)
    channels = cfg.in_chans or train.channels
    notes: list[str] = []
    images, drawn = sample_images(cfg, channels, n, split=split, notes=notes)
    aug = build_augment(cfg.augment, cfg.image_size, channels, cfg.mean, cfg.std, views=METHODS[cfg.method].views,
                        **cfg.augment_args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        views = aug(images)
    rows = {"as evaluated": EvalView(cfg.image_size, channels, cfg.mean, cfg.std)(images)[0]}
    rows |= {f"view {i + 1}": v for i, v in enumerate(views)}
    args = ", ".join(f"{a}={v}" for a, v in cfg.augment_args.items())
    path = save_image_rows(rows, default_stats(channels, cfg.mean, cfg.std),
                           output_png(out, Path("."), f"augment_{cfg.augment}.png"),
                           f"{cfg.augment}{f' ({args})' if args else ''} on {data_name(cfg.data)} {drawn}, "
                           f"{cfg.image_size} px, seed {cfg.seed}")
    if train.window_note:  # already 'note: ...' lines, as pretrain prints them
        print("  " + train.window_note)
    for note in notes:
        print(f"  note: {note}")
    print(f"wrote {path}: {len(views)} view(s) of {len(images)} {drawn} image(s) under '{cfg.augment}', the top row as "
          "evaluation sees them")
    return path
