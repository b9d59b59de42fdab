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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vissl_lite.data import data_name, load_split
    from vissl_lite.eval.reconstruct import sample_images
    from vissl_lite.methods import METHODS

    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    # the channel count the run would train with: the data's own unless --in-chans (a folder is listed, not decoded)
    channels = cfg.in_chans or load_split(cfg.data, "train", cfg.image_size, 0, cfg.val_fraction, "stream",
                                          progress=False, window=cfg.window).channels
    notes: list[str] = []
    images, drawn = sample_images(cfg, channels, n, split=split, notes=notes)
    aug = build_augment(cfg.augment, cfg.image_size, channels, cfg.mean, cfg.std, views=METHODS[cfg.method].views,
                        **cfg.augment_args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        views = aug(images)
    rows = {"as evaluated": EvalView(cfg.image_size, channels, cfg.mean, cfg.std)(images)[0]}
    rows |= {f"view {i + 1}": v for i, v in enumerate(views)}
    mean, std = default_stats(channels, cfg.mean, cfg.std)
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    k = images.shape[0]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.3 * k, 1.35 * len(rows) + 0.4), squeeze=False)
    for r, (label, batch) in enumerate(rows.items()):
        pics = (batch.float() * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for c in range(k):
            ax = axes[r][c]
            ax.imshow(pics[c][..., 0] if channels == 1 else pics[c], cmap="gray" if channels == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    args = ", ".join(f"{a}={v}" for a, v in cfg.augment_args.items())
    fig.suptitle(f"{cfg.augment}{f' ({args})' if args else ''} on {data_name(cfg.data)} {drawn}, {cfg.image_size} px, "
                 f"seed {cfg.seed}", fontsize=9)
    fig.tight_layout()
    path = Path(out) if out else Path(f"augment_{cfg.augment}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    for note in notes:
        print(f"  note: {note}")
    print(f"wrote {path}: {len(views)} view(s) of {k} {drawn} image(s) under '{cfg.augment}', the top row as "
          "evaluation sees them")
    return path
