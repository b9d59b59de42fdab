"""Batched view generators that run on the device (kornia), one random draw per sample.

Contract: ``aug(x) -> list[Tensor (B, C, size, size)]`` for ``x`` uint8 (0..255) or float (0..1) of shape
(B, C, H, W), on any device; output stays on that device, float32, normalised. Probabilities of 0 make a step
the identity. Randomness comes from torch's global generator, so ``torch.manual_seed`` makes runs repeat.
"""

from __future__ import annotations

import torch
from torch import nn

from vissl_lite.augment.colour import ColorJitter, RandomGaussianBlur, RandomGrayscale
from vissl_lite.augment.geometry import ResizedCropFlip, crops_one_by_one

# On CPU a view goes through its pipeline a chunk of images at a time when the whole batch would be larger than
# this. At 224 px one float temporary of a 64-image batch is 38 MB, above glibc's largest mmap threshold (32 MB),
# so every one of the pipeline's temporaries was mapped fresh and page-faulted in, which cost more than the
# arithmetic on it; chunk-sized temporaries are reused from the heap.
CHUNK_BYTES = 8 << 20

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_stats(channels: int, mean: list | tuple = (), std: list | tuple = ()) -> tuple[tuple, tuple]:
    """ImageNet statistics for RGB, their average for one channel (timm's convention for in_chans=1)."""
    if mean:
        if len(mean) != channels:
            raise ValueError(f"mean {list(mean)} has {len(mean)} values for {channels}-channel images")
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,) * channels, (sum(IMAGENET_STD) / 3,) * channels


class RoundTo8Bit(nn.Module):
    """Round values in [0, 1] to the nearest of the 256 levels of an 8-bit image, in place.

    A PIL or uint8-tensor pipeline (torchvision, lightly) stores every intermediate view as uint8, so its views, like
    the unaugmented images the evaluations see, only take these levels; float ops produce values between them. The
    ``simclr`` views end with this by default (once, on the finished view: one pass over the batch), so they take
    the same values as the views of those pipelines. What it does to quality is not settled: on PneumoniaMNIST,
    rounding after the crop and after the jitter raised the probe by 1.7 points in a 3-seed, 3-minute run, but only
    by 0.5 over rounding once at the end when repeated at 4 minutes, and end rounding was within noise of float
    views (README, Speed section).
    """

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(255).round_().div_(255)


class _Views(nn.Module):
    """Shared plumbing: uint8 -> float in [0, 1], one random pipeline per view, then normalise."""

    def __init__(self, channels: int, mean: tuple, std: tuple):
        super().__init__()
        self.channels = channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def check(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected a batch (B, {self.channels}, H, W), got {tuple(x.shape)}")
        return x

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check(x)
        return x.float().div_(255) if x.dtype == torch.uint8 else x.float()

    def to_crop_input(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """The input of a pipeline that starts with :class:`ResizedCropFlip`: uint8 stays uint8 where the crop
        resizes uint8 crops and converts its output (CPU, large outputs: once per view there, in pieces),
        otherwise the batch is converted once for all views."""
        if x.dtype == torch.uint8 and crops_one_by_one(x.device, size):
            return self.check(x)
        return self.to_float(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def normalize_(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`normalize` in place, for the pipelines' own fresh outputs (no full-size temporaries)."""
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))

    def view(self, x: torch.Tensor, make, size: int) -> torch.Tensor:
        """One normalised view ``make(x)`` of size ``size`` (``make`` must return a fresh tensor): whole-batch on a
        GPU, in chunks of images on CPU when the batch's view exceeds ``CHUNK_BYTES`` (see there)."""
        b = x.shape[0]
        chunk = max(1, CHUNK_BYTES // (4 * self.channels * size * size))
        if x.device.type != "cpu" or chunk >= b:
            return self.normalize_(make(x))
        out = None
        for i in range(0, b, chunk):
            y = self.normalize_(make(x[i:i + chunk]))
            if out is None:  # the pipeline's own dtype and shape, as the whole-batch branch returns
                out = y.new_empty((b, *y.shape[1:]))
            out[i:i + chunk] = y
        return out


class SimCLRViews(_Views):
    """Two views as in SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations", Appendix A): random resized crop (scale 0.08-1, ratio 3/4-4/3), horizontal flip, colour
    jitter with strength s (0.8s brightness/contrast/saturation, 0.2s hue) applied with p=0.8, grayscale p=0.2,
    Gaussian blur with a kernel ~10% of the image side and sigma in [0.1, 2.0] applied with p=0.5.

    The steps are this package's batched ops (:mod:`~vissl_lite.augment.geometry`,
    :mod:`~vissl_lite.augment.colour`), which replaced kornia's modules after profiling (1.5x the pipeline's
    throughput on CPU at 32 px). They keep kornia's random draws and torchvision's formulas: the crop is resized on the
    half-pixel grid with antialiasing, as torchvision's; the colour jitter is torchvision's (multiplicative
    brightness, contrast and saturation blended with the grayscale image), the jitter behind the published SimCLR
    numbers in the torchvision-based reproductions (and in lightly and solo-learn), not kornia's ColorJiggle. One
    difference from torchvision is left: one order of the four colour steps is drawn per batch, as kornia does,
    not per image (per chunk of images on CPU at large sizes, see :meth:`_Views.view`; so on CPU the views a seed
    gives there depend on the batch size).

    One-channel input stays one channel: hue and saturation jitter and grayscale are dropped (they need colour).
    With ``quantize`` (default) the finished view is rounded to 8-bit levels (:class:`RoundTo8Bit`).
    """

    def __init__(self, size: int, channels: int = 3, mean: tuple = (), std: tuple = (), scale: tuple = (0.08, 1.0),
                 ratio: tuple = (3 / 4, 4 / 3), strength: float = 1.0, p_jitter: float = 0.8, p_gray: float = 0.2,
                 p_blur: float = 0.5, p_flip: float = 0.5, n_views: int = 2, quantize: bool = True):
        mean, std = default_stats(channels, mean, std)
        super().__init__(channels, mean, std)
        self.size, self.n_views = size, n_views
        s = strength
        colour = channels == 3
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd, ~10% of the side
        steps = [
            ResizedCropFlip(size, scale, ratio, p_flip),
            ColorJitter(0.8 * s, 0.8 * s, 0.8 * s if colour else 0.0, 0.2 * s if colour else 0.0, p=p_jitter),
        ]
        if colour:
            steps.append(RandomGrayscale(p=p_gray))
        steps.append(RandomGaussianBlur(kernel, (0.1, 2.0), p=p_blur))
        if quantize:  # the finished view on 8-bit levels, as a uint8 pipeline stores it (RoundTo8Bit)
            steps.append(RoundTo8Bit())
        self.pipeline = nn.Sequential(*steps)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.to_crop_input(x, self.size)  # (B, C, H, W) in [0, 1], or uint8 for the crop to convert
        return [self.view(x, self.pipeline, self.size) for _ in range(self.n_views)]


class CropFlipViews(_Views):
    """Random resized crop (scale 0.2-1) and horizontal flip, the MAE recipe (He et al. 2022); ``n_views`` views."""

    def __init__(self, size: int, channels: int = 3, mean: tuple = (), std: tuple = (), scale: tuple = (0.2, 1.0),
                 ratio: tuple = (3 / 4, 4 / 3), p_flip: float = 0.5, n_views: int = 1):
        mean, std = default_stats(channels, mean, std)
        super().__init__(channels, mean, std)
        self.size, self.n_views = size, n_views
        self.pipeline = nn.Sequential(ResizedCropFlip(size, scale, ratio, p_flip))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.to_crop_input(x, self.size)
        # one step that writes its output image by image: chunks would only add a copy
        return [self.normalize_(self.pipeline(x)) for _ in range(self.n_views)]


class EvalView(_Views):
    """Deterministic evaluation view: resize to ``size`` if needed (images are already centre-cropped at load),
    normalise. One view."""

    def __init__(self, size: int, channels: int = 3, mean: tuple = (), std: tuple = ()):
        mean, std = default_stats(channels, mean, std)
        super().__init__(channels, mean, std)
        self.size = size

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.to_float(x)
        if x.shape[-2:] != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                                align_corners=False)
        return [self.normalize(x)]
