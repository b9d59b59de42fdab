"""Reconstruction grids for methods that rebuild their input (MAE, DAE): original / corrupted / reconstruction."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from torch import nn

from vissl_lite import runs
from vissl_lite.augment import EvalView, default_stats
from vissl_lite.backbones import in_chans_of
from vissl_lite.config import ConfigError, RunConfig
from vissl_lite.data import DataError, channel_note, data_name, load_split
from vissl_lite.data.datasets import absolute_spec, same_data
from vissl_lite.data.decode import decode_image


@torch.no_grad()
def save_reconstruction_grid(model: nn.Module, images: torch.Tensor, cfg: RunConfig, path: Path,
                             title: str = "") -> Path:
    """Draw rows original / corrupted input / reconstruction for uint8 ``images`` (N, C, S, S).

    Reconstructions are de-normalised with the run's mean and std; MAE with norm_pix_loss has already mapped its
    prediction back through each patch's statistics (see ``MAE.reconstruct``). The mask or noise is drawn from
    a generator seeded with the run's seed, so the same run gives the same grid.
    """
    if not hasattr(model, "reconstruct"):
        raise ValueError(f"method '{cfg.method}' does not reconstruct images; reconstruct works for mae and dae")
    device = next(model.parameters()).device
    channels = in_chans_of(model.backbone)
    x = EvalView(cfg.image_size, channels, cfg.mean, cfg.std).to(device)(images.to(device))[0]
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        out = model.reconstruct(x)
    rows = {"original": x, "input to the model": out["input"], "reconstruction": out["reconstruction"]}
    return save_image_rows(rows, default_stats(channels, cfg.mean, cfg.std), path,
                           title or f"{cfg.method} / {cfg.backbone} on {cfg.data}", fontsize=10)


def save_image_rows(rows: dict[str, torch.Tensor], stats: tuple, path: Path, title: str, fontsize: int = 9) -> Path:
    """A PNG grid: one row per entry of ``rows`` (label -> normalised (N, C, H, W) images, the same N), one column
    per image, de-normalised with ``stats`` = (mean, std); grayscale for one channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean_t, std_t = (torch.tensor(v).view(1, -1, 1, 1) for v in stats)
    n = next(iter(rows.values())).shape[0]
    width = max(1.3 * n, 3.2)
    # wrap the title to the figure's width (a few columns are narrower than a title naming recipe, data and
    # seed); an average glyph is about 0.6 of the font size wide
    lines = textwrap.wrap(title, max(16, int(width * 72 / (0.6 * fontsize)))) or [""]
    fig, axes = plt.subplots(len(rows), n, figsize=(width, 1.35 * len(rows) + 0.25 + 0.18 * len(lines)),
                             squeeze=False)
    for r, (label, batch) in enumerate(rows.items()):
        pics = (batch.float().cpu() * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        gray = pics.shape[-1] == 1
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(pics[c][..., 0] if gray else pics[c], cmap="gray" if gray else None, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle("\n".join(lines), fontsize=fontsize)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def output_png(out: str | Path | None, folder: Path, name: str) -> Path:
    """Where an image command writes: ``folder / name`` by default; inside ``out`` when it is a folder (existing,
    or written with a trailing '/'); else ``out``, with '.png' added when it has no suffix (matplotlib would add it
    and the printed path would be wrong). Refused: a suffix matplotlib cannot write, and an existing file of a run
    or results folder that is not one of this command's own pictures (``name``'s prefix), e.g. its training
    curves."""
    if out is None:
        path = folder / name
    elif Path(out).is_dir() or str(out).endswith(("/", "\\")):
        path = Path(out) / name
    else:
        path = Path(out) if Path(out).suffix else Path(out).with_suffix(".png")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"--out {out}: this command draws an image; give a path ending in "
                          f"{', '.join(IMAGE_SUFFIXES)}, or a folder")
    own = name.split("_")[0] + "_"
    results = (path.parent / runs.CHECKPOINT).is_file() or (path.parent / "metrics.json").is_file()
    if path.exists() and results and not path.name.startswith(own):
        raise FileExistsError(f"--out {path} is a file of the results in {path.parent}, which this picture would "
                              f"replace; choose another name (the default, {name}, is kept apart from them)")
    return path


def sample_images(cfg: RunConfig, channels: int, n: int, data: str | None = None, split: str = "test",
                  notes: list | None = None) -> tuple[torch.Tensor, str]:
    """The first ``n`` images of ``split`` (falling back to train for data without that split) and the split they
    came from. ``notes``, if given, receives a line for each thing the caller should tell the user (the fallback,
    fewer images than asked, a channel conversion). Unreadable files are skipped when the run skips them
    (``cfg.on_bad_file``)."""
    spec = data or cfg.data
    notes = [] if notes is None else notes
    common = dict(progress=False, window=cfg.window, on_bad_file=cfg.on_bad_file)
    try:  # 'stream' mode: a folder is listed, not decoded; only the n files drawn are decoded below
        dataset = load_split(spec, split, cfg.image_size, channels, cfg.val_fraction, "stream", **common)
    except DataError:
        dataset = load_split(spec, "train", cfg.image_size, channels, cfg.val_fraction, "stream", **common)
        notes.append(f"{spec} has no {split} split: drawing from train")
    if note := channel_note(dataset, spec):
        notes.append(note.removeprefix("note: "))
    if dataset.images is not None:
        images = dataset.images[:n]
    else:
        decoded = []
        for f in dataset.files:
            if len(decoded) == n:
                break
            try:
                decoded.append(decode_image(f, cfg.image_size, channels, dataset.window))
            except DataError:
                if cfg.on_bad_file != "skip":
                    raise
        if not decoded:
            raise DataError(f"no file of the {dataset.split} split of {spec} could be decoded ({len(dataset.files)} "
                            "tried, each skipped as unreadable); point --data at images that open")
        images = torch.stack(decoded)
    if len(images) < n:
        notes.append(f"the {dataset.split} split has {len(images)} images: drawing {len(images)}, not {n}")
    return images, dataset.split


def reconstruct(checkpoint: str | Path, out: str | Path | None = None, data: str | None = None,
                split: str = "test", n: int = 8, device: str = "auto") -> Path:
    """Python twin of ``vissl-lite reconstruct``: a grid for the first ``n`` images of ``split``.

    ``out`` defaults to ``reconstructions_<split>_<n>.png`` beside the checkpoint (so it does not replace the
    ``reconstructions.png`` that pretraining wrote and report.md shows), with the split the images came from;
    ``reconstructions_<data name>_<split>_<n>.png`` for ``data`` other than the run's."""
    dev = runs.resolve_device(device)
    cfg, model, ckpt = runs.load_run(checkpoint, dev)
    notes: list[str] = []
    images, drawn = sample_images(cfg, in_chans_of(model.backbone), n, data, split, notes)
    # other data than the run's gets its name in the file's, so the grid of the run's own test images stays
    other = f"{data_name(absolute_spec(str(data)))}_" if data and not same_data(str(data), str(cfg.data)) else ""
    out = output_png(out, runs.find_checkpoint(checkpoint).parent,
                     f"reconstructions_{other}{drawn}_{len(images)}.png")
    path = save_reconstruction_grid(model, images, cfg, out,
                                    f"{cfg.method} / {cfg.backbone}, step {ckpt['step']}, {data or cfg.data} {drawn}")
    for note in notes:
        print(f"  note: {note}")
    print(f"wrote {path}")
    return path
