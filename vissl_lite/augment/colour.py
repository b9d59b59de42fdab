"""Batched colour jitter with torchvision's formulas, for the SimCLR recipe.

kornia's ``ColorJitter`` was 50% of the SimCLR pipeline's time at 32 px and 70% at 224 px on CPU (profiled in
``benchmarks/augment_throughput.py``; the hue step's RGB -> HSV -> RGB round trip is most of it, plus a host sync
per step to skip neutral factors). This module computes the same four steps as plain batched tensor maths:

- brightness ``b``: ``x * b``;
- contrast ``c``: blend with the mean of the image's grayscale, ``c * x + (1 - c) * mean``;
- saturation ``s``: blend with the grayscale image, ``s * x + (1 - s) * gray``;
- hue ``h`` (in turns): rotate the HSV hue by ``h``, keeping HSV saturation and value. Written in closed form
  (the max channel stays, the chroma ``max - min`` stays, each channel follows the hexcone formula of the shifted
  hue), so no HSV image is ever built.

Each step clips to [0, 1], as torchvision and kornia do; grayscale uses the ITU-R 601 weights (0.299, 0.587,
0.114). Factors are drawn per image, uniform on [max(0, 1 - v), 1 + v] (brightness, contrast, saturation) and
[-h, h] (hue), for the images picked with probability ``p``; the others are returned unchanged. As in kornia, one
random order of the four steps is drawn per call (torchvision draws one per image). The test suite checks the
output against kornia's ``ColorJitter`` given the same factors and order.
"""

from __future__ import annotations

import torch
from torch import nn

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_brightness_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """In place; ``factor``: (B, 1, 1, 1)."""
    return x.mul_(factor).clamp_(0, 1)


def adjust_contrast_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """In place: blend with the mean gray level of each image (over all channels for one-channel input)."""
    mean = (grayscale(x) if x.shape[1] == 3 else x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return x.lerp_(mean, 1 - factor).clamp_(0, 1)  # factor * x + (1 - factor) * mean


def adjust_saturation_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """In place: blend each pixel with its own gray level. RGB only."""
    return x.lerp_(grayscale(x), 1 - factor).clamp_(0, 1)


def adjust_hue_(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB images in [0, 1] by ``turns`` (B, 1, 1, 1), a fraction of the colour circle;
    the result is written into ``x``.

    With ``hi = max(r, g, b)``, chroma ``c = hi - min(r, g, b)`` and the hue in sextants ``h6`` in [0, 6), the RGB
    value of (h6, c, hi) is, for channel offsets n = 5, 3, 1 (R, G, B): ``hi - c * clip(min(k, 4 - k), 0, 1)``
    with ``k = (n + h6) mod 6``, and ``min(k, 4 - k) = 2 - |k - 2|`` on [0, 6). Shifting the hue is adding
    ``6 * turns`` to ``h6`` inside the ``mod``. Every large temporary is (B, 1, H, W) except ``k``; at 224 px a
    fresh full-size tensor costs more in page faults than the arithmetic on it.
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]  # (B, 1, H, W) each
    hi = torch.maximum(torch.maximum(r, g), b)  # elementwise: much cheaper than a max over dim 1 on CPU
    chroma = hi - torch.minimum(torch.minimum(r, g), b)
    # hue in sextants, torchvision's tie-breaking (red, then green, then blue holds the max); grey pixels get 0
    num = torch.where(hi == r, g - b, torch.where(hi == g, b - r + 2 * chroma, r - g + 4 * chroma))
    h6 = num.div_(torch.where(chroma > 0, chroma, 1.0)).add_(6.0 * turns)  # shifted hue, (B, 1, H, W)
    offsets = torch.arange(5, 0, -2, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # 5, 3, 1; no host copy
    torch.remainder(h6 + offsets, 6.0, out=x)  # k, (B, 3, H, W)
    return x.sub_(2).abs_().neg_().add_(2).clamp_(0, 1).mul_(chroma).neg_().add_(hi)

def _range(v: float, centre: float) -> tuple[float, float]:
    return (max(0.0, centre - v), centre + v) if centre else (-v, v)


class ColorJitter(nn.Module):
    """Per-image colour jitter applied with probability ``p``; arguments as torchvision's ``ColorJitter``
    (``brightness=0.8`` draws factors in [0.2, 1.8]; ``hue=0.2`` draws shifts in [-0.2, 0.2] turns). Steps with
    strength 0 are skipped. One-channel input accepts only brightness and contrast."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0,
                 p: float = 1.0):
        super().__init__()
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] turns, got {hue}")
        if min(brightness, contrast, saturation) < 0:
            raise ValueError(f"brightness, contrast and saturation must be >= 0, got {brightness}, {contrast}, "
                             f"{saturation}")
        self.ranges = (_range(brightness, 1.0), _range(contrast, 1.0), _range(saturation, 1.0), _range(hue, 0.0))
        self.active = tuple(v > 0 for v in (brightness, contrast, saturation, hue))
        self.p = p

    def sample(self, batch: int, device) -> dict:
        """Per-image factors (B, 1, 1, 1) for the four steps, neutral for images not picked, the picked mask and
        the order of the steps (indices into brightness, contrast, saturation, hue)."""
        picked = torch.rand(batch, 1, 1, 1, device=device) < self.p
        factors = []
        for (lo, hi), neutral in zip(self.ranges, (1.0, 1.0, 1.0, 0.0)):
            f = torch.empty(batch, 1, 1, 1, device=device).uniform_(lo, hi)
            factors.append(torch.where(picked, f, neutral))
        return {"factors": factors, "picked": picked, "order": torch.randperm(4).tolist()}

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        if x.shape[1] != 3 and (self.active[2] or self.active[3]):
            raise ValueError(f"saturation and hue jitter need RGB images, got {x.shape[1]} channel(s); set them to 0")
        steps = (adjust_brightness_, adjust_contrast_, adjust_saturation_, adjust_hue_)
        out = x.clamp(0, 1)  # the one full-size copy; every step then works in place
        for i in params["order"]:
            if self.active[i]:
                out = steps[i](out, params["factors"][i])
        return torch.where(params["picked"], out, x, out=out)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1] -> same shape."""
        if self.p <= 0 or not any(self.active):
            return x
        return self.apply(x, self.sample(x.shape[0], x.device))

    def extra_repr(self) -> str:
        names = ("brightness", "contrast", "saturation", "hue")
        return ", ".join(f"{n}={r}" for n, r, a in zip(names, self.ranges, self.active) if a) + f", p={self.p}"


class RandomGrayscale(nn.Module):
    """Replace each RGB image by its luma (in all three channels) with probability ``p``."""

    def __init__(self, p: float = 0.2):
        super().__init__()
        self.p = p

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> same shape."""
        picked = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(picked, grayscale(x), x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def apply_to_picked(x: torch.Tensor, picked: torch.Tensor, fn, subset: bool) -> torch.Tensor:
    """``fn(images, sel)`` on the images of ``x`` (B, ...) where ``picked`` (B,) is true, the others returned exactly
    as they are; ``sel`` indexes the per-image parameters that go with ``images``. With ``subset`` (CPU) only the
    picked images are computed; otherwise (a GPU, where sizing the subset would be a host sync) all of them are,
    with ``sel`` a full slice, and ``torch.where`` keeps the others from ``x``. Both give the same output."""
    if not subset:
        return torch.where(picked.view(-1, *([1] * (x.ndim - 1))), fn(x, slice(None)), x)
    idx = picked.nonzero()[:, 0]
    out = x.clone()
    if len(idx):
        out[idx] = fn(x[idx], idx)
    return out


class RandomGaussianBlur(nn.Module):
    """Gaussian blur with ``sigma`` uniform in ``sigma`` per image, applied with probability ``p``; an odd
    ``kernel`` x ``kernel`` window and reflected borders, as torchvision's ``GaussianBlur``.

    Separable and batched: each image's 1-D kernel is one group of a depthwise convolution over the whole batch.
    Images not picked are returned exactly unchanged. On CPU only the picked images are convolved (half the work
    at p=0.5). On a GPU, where sizing that subset would need a host sync, the whole batch is convolved, the images
    not picked with the kernel (0, ..., 1, ..., 0), and then put back from the input (a TF32 convolution would
    round them).
    """

    def __init__(self, kernel: int, sigma: tuple = (0.1, 2.0), p: float = 0.5):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {kernel}")
        self.kernel, self.sigma, self.p = kernel, tuple(sigma), p

    def kernels(self, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, kernel) normalised 1-D kernels (the identity kernel for images not picked) and the picked (B,)."""
        sigma = torch.empty(batch, 1, device=device).uniform_(*self.sigma)
        t = torch.arange(self.kernel, device=device, dtype=torch.float32) - self.kernel // 2
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum(dim=1, keepdim=True)
        picked = torch.rand(batch, 1, device=device) < self.p
        return torch.where(picked, k, (t == 0).float()), picked[:, 0]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> same shape; a new tensor unless the blur is off (p 0 or kernel 1)."""
        if self.p <= 0 or self.kernel == 1:
            return x
        k, picked = self.kernels(x.shape[0], x.device)
        return apply_to_picked(x, picked, lambda images, sel: self.blur(images, k[sel]), x.device.type == "cpu")

    def blur(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Image ``i`` of ``x`` (B, C, H, W) convolved with ``k[i]`` along both axes, reflected borders."""
        b, c, h, w = x.shape
        r = self.kernel // 2
        k = k.to(x.dtype).repeat_interleave(c, dim=0)  # (B*C, kernel)
        y = torch.nn.functional.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
        y = torch.nn.functional.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)  # along W
        y = torch.nn.functional.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)  # along H
        return y.view(b, c, h, w)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, sigma={self.sigma}, p={self.p}"
