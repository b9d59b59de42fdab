"""Random resized crop and horizontal flip as two batched matrix products.

A bilinear resize is linear and separable: each output row is a weighted sum of input rows and each output column
of input columns. For image ``b`` with crop box rows [y0, y0 + h) and columns [x0, x0 + w), the crop resized to
``S x S`` is ``Wy[b] @ x[b] @ Wx[b].T`` with ``Wy[b]`` (S, H) and ``Wx[b]`` (S, W) holding the interpolation
weights, zero outside the box. A horizontal flip reverses the rows of ``Wx[b]``. So the crop, the resize and the
flip of a whole batch are two ``matmul`` calls on weights built from (B, S) vectors: no per-sample Python and no
gather. kornia's ``RandomResizedCrop`` (slice mode) resizes each crop in a Python loop, and its flip copies the
flipped subset; together they were about 40% of the SimCLR pipeline's time on CPU at 32 px.

The weights are torchvision's resize (``antialias=True``, half-pixel centres): a triangle filter of half-width
``max(1, w / S)`` input pixels around each output pixel's centre, restricted to the box and renormalised. When
upsampling this is exactly bilinear interpolation with the crop's edge pixels repeated (``F.interpolate(...,
align_corners=False)``); when downsampling it averages over the footprint instead of aliasing. The boxes come from
kornia's ``RandomResizedCrop`` parameter generator (torchvision's rejection sampling of area and log-aspect ratio),
so their distribution is kornia's.

On CPU, outputs larger than ``LOOP_ABOVE`` pixels are resized one image at a time with ``F.interpolate`` (the same
weights): at 224 px the dense products spend most of their work on zero weights. That path takes uint8 batches as
they are and resizes the uint8 crops (torch's fixed-point kernel, as torchvision's uint8 tensor pipeline does; the
resized pixels are rounded to 8-bit levels, as that pipeline stores them), then converts the output batch once: at
224 px a fresh full-size float copy of the source batch costs more in page faults than the arithmetic on it. The
flips are applied to each resized crop before it is stored.

:class:`RandomAffine` (rotation, shift and zoom about the centre) replaces kornia's module of the same name in the
medical presets: draws from the same distribution, one ``affine_grid`` and one ``grid_sample`` on the picked
images, and none of the per-call matrix bookkeeping that was half of kornia's time on CPU at 224 px. For a given
draw its output is kornia's with ``align_corners=True``, the convention in which kornia's pixel matrix and its
sampling grid agree (kornia's default, ``False``, zooms by an extra W / (W - 1) and reflects about the image edge).
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from vissl_lite.augment.colour import apply_to_picked

# On CPU, above this output size the dense weights waste most of their multiply-adds on zeros and one
# F.interpolate per image (same weights, computed sparsely) is faster; its Python overhead is then small.
LOOP_ABOVE = 64


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """(B, out_size, in_size) weights resizing the span [start, start + length) of an axis to ``out_size`` pixels.

    Args:
        start, length: (B,) float pixel offsets and extents of the box on this axis.
    """
    scale = (length / out_size).unsqueeze(1)  # (B, 1) input pixels per output pixel
    centre = start.unsqueeze(1) + (torch.arange(out_size, device=start.device) + 0.5) * scale  # (B, S)
    support = scale.clamp(min=1.0)  # half-width: widen the filter when downsampling (antialias)
    pixel = torch.arange(in_size, device=start.device, dtype=centre.dtype) + 0.5  # input pixel centres
    w = (1 - (pixel.view(1, 1, -1) - centre.unsqueeze(2)).abs() / support.unsqueeze(2)).clamp_(min=0)  # (B, S, in)
    inside = (pixel >= start.unsqueeze(1)) & (pixel < (start + length).unsqueeze(1))  # (B, in)
    w = w * inside.unsqueeze(1)
    return w / w.sum(dim=2, keepdim=True)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None,
                 vflip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop ``boxes`` (B, 4) as (x0, y0, w, h) in pixels out of ``x`` (B, C, H, W), resize each to ``size``,
    mirror left-right the images where ``flip`` (B,) bool is set and upside down where ``vflip`` is. Returns
    (B, C, size, size); a uint8 ``x`` (0..255) gives float in [0, 1], a float ``x`` its own dtype."""
    _, _, height, width = x.shape
    if crops_one_by_one(x.device, size):
        return _resized_crop_loop(x, boxes, size, flip, vflip)
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    boxes = boxes.to(x.device, torch.float32)
    wy = resize_weights(boxes[:, 1], boxes[:, 3], height, size)  # (B, S, H)
    wx = resize_weights(boxes[:, 0], boxes[:, 2], width, size)  # (B, S, W)
    if flip is not None:
        wx = torch.where(flip.view(-1, 1, 1), wx.flip(1), wx)
    if vflip is not None:  # the same trick on the row weights
        wy = torch.where(vflip.view(-1, 1, 1), wy.flip(1), wy)
    wy, wx = wy.to(x.dtype), wx.to(x.dtype)
    b, c = x.shape[:2]
    cols = torch.bmm(x.reshape(b, c * height, width), wx.transpose(1, 2))  # (B, C*H, S): columns resized
    cols = cols.view(b, c, height, size).transpose(2, 3).reshape(b, c * size, height)  # (B, C*S, H)
    out_t = torch.bmm(cols, wy.transpose(1, 2))  # (B, C*S, S): rows resized, (column, row) order
    return out_t.view(b, c, size, size).transpose(2, 3).contiguous()  # (B, C, S, S)


def crops_one_by_one(device: torch.device, size: int) -> bool:
    """Whether :func:`resized_crop` resizes image by image (CPU, outputs above ``LOOP_ABOVE``); that path converts
    uint8 after resizing, so callers should hand it uint8 batches unconverted."""
    return device.type == "cpu" and size > LOOP_ABOVE


def _resized_crop_loop(x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None,
                       vflip: torch.Tensor | None = None) -> torch.Tensor:
    # uint8 crops are resized in uint8 (torch's fixed-point antialiased kernel, as torchvision's tensor pipeline
    # resizes them) and the batch converted to float once: about 1.4x the float path at 224 px on CPU, at the cost
    # of rounding each resized pixel to the nearest of the 256 levels, as a uint8 pipeline stores its crops
    u8 = x.dtype == torch.uint8
    out = torch.empty(x.shape[0], x.shape[1], size, size, dtype=x.dtype, device=x.device)
    n = x.shape[0]
    flips = flip.tolist() if flip is not None else [False] * n  # CPU tensors: no device sync
    vflips = vflip.tolist() if vflip is not None else [False] * n
    for i, (x0, y0, w, h) in enumerate(boxes.long().tolist()):
        r = F.interpolate(x[i:i + 1, :, y0:y0 + h, x0:x0 + w], size=(size, size), mode="bilinear",
                          align_corners=False, antialias=True)[0]
        if flips[i]:
            r = r.flip(2)
        if vflips[i]:
            r = r.flip(1)
        out[i] = r
    return out.float().div_(255) if u8 else out


class ResizedCropFlip(nn.Module):
    """Random resized crop (torchvision's sampling of ``scale`` and ``ratio``) to ``size`` x ``size``, then a
    horizontal flip with probability ``p_flip`` and a vertical one with probability ``p_vflip``; one draw per
    image."""

    def __init__(self, size: int, scale: tuple = (0.08, 1.0), ratio: tuple = (3 / 4, 4 / 3), p_flip: float = 0.5,
                 p_vflip: float = 0.0):
        super().__init__()
        self.size, self.scale, self.ratio, self.p_flip, self.p_vflip = size, tuple(scale), tuple(ratio), p_flip, p_vflip
        self.sampler = K.RandomResizedCrop((size, size), scale=tuple(scale), ratio=tuple(ratio))

    def sample(self, shape: torch.Size, device) -> dict:
        """Crop boxes (B, 4) as (x0, y0, w, h), flips and vertical flips (B,) for a batch of ``shape``
        (``vflip`` is None when ``p_vflip`` is 0: no draw, so recipes without it keep their random stream)."""
        src = self.sampler.forward_parameters(shape)["src"]  # (B, 4, 2) corners, inclusive pixel indices
        boxes = torch.stack([src[:, 0, 0], src[:, 0, 1], src[:, 1, 0] - src[:, 0, 0] + 1,
                             src[:, 2, 1] - src[:, 0, 1] + 1], dim=1)
        flip = torch.rand(shape[0], device=device) < self.p_flip
        vflip = torch.rand(shape[0], device=device) < self.p_vflip if self.p_vflip else None
        # kornia draws on the CPU (see _apply); a blocking copy to a GPU would wait for the queued work (a hidden
        # host sync), and so may an asynchronous one from pageable memory (CUDA stages it), hence the pinned buffer
        if torch.device(device).type == "cuda" and boxes.device.type == "cpu":
            boxes = boxes.pin_memory()
        return {"boxes": boxes.to(device, non_blocking=True), "flip": flip, "vflip": vflip}

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)`` moves kornia's sampler's random draws to the device; keep them on the CPU in float32:
        kornia builds the boxes from them on its default (CPU) device, so device draws would each be copied back
        (four host syncs per batch), and float64 draws would change the boxes' dtype."""
        super()._apply(fn, *args, **kwargs)
        self.sampler.set_rng_device_and_dtype(torch.device("cpu"), torch.float32)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, C, size, size) of its dtype; uint8 (0..255) -> float32 in [0, 1]."""
        params = self.sample(x.shape, x.device)
        return resized_crop(x, params["boxes"], self.size, params["flip"], params["vflip"])

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, ratio={self.ratio}, p_flip={self.p_flip}, p_vflip={self.p_vflip}"


def affine_warp(x: torch.Tensor, angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor,
                padding: str = "reflection") -> torch.Tensor:
    """Warp each image of ``x`` (B, C, H, W) by its own rotation, zoom and shift about the image centre, bilinear.

    ``angle`` (B,) in degrees, clockwise as displayed (kornia's ``RandomAffine`` convention), ``scale`` (B,) the
    zoom (> 1 enlarges) and ``translate`` (B, 2) the shift (x, y) in pixels. A source pixel p lands at
    ``s R (p - c) + c + t``, c the centre of the pixel grid ((W - 1) / 2, (H - 1) / 2). Pixel centres map to the
    normalised grid with ``align_corners=True``, so ``padding="reflection"`` mirrors about the border pixels'
    centres and ``"zeros"`` fills with 0 (``"border"`` repeats the edge).
    """
    b, _, h, w = x.shape
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):
        x = x.float()  # half-precision grids are too coarse for pixel positions (NaN and off-by-pixels in bf16)
    theta = torch.deg2rad(angle.to(torch.float32))
    cos, sin = torch.cos(theta), torch.sin(theta)
    inv_s = 1.0 / scale.to(torch.float32)
    # inverse map (output pixel -> source pixel) in coordinates normalised to [-1, 1] on each axis: the rotation's
    # transpose divided by the zoom, with the axes' different pixel scales (2 / (W - 1), 2 / (H - 1)) folded in
    kx, ky = (h - 1) / max(w - 1, 1), (w - 1) / max(h - 1, 1)
    a = torch.stack([torch.stack([cos, sin * kx], 1), torch.stack([-sin * ky, cos], 1)], 1) * inv_s.view(b, 1, 1)
    t = translate.to(torch.float32)
    t = torch.stack([t[:, 0] * (2.0 / max(w - 1, 1)), t[:, 1] * (2.0 / max(h - 1, 1))], 1)  # no host->device copy
    theta = torch.cat([a, -(a @ t.unsqueeze(2))], dim=2)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True).to(dtype)


class RandomAffine(nn.Module):
    """With probability ``p`` per image: a rotation by U(-degrees, degrees), a zoom by U(*scale) and a shift by
    U(-translate, translate) of the width and of the height, about the centre (:func:`affine_warp`). The draws have
    the distribution of kornia's ``RandomAffine`` without shear; images not picked are returned exactly unchanged.
    On CPU only the picked images are warped; on a GPU, where sizing that subset would need a host sync, all are
    and the others are put back from the input."""

    def __init__(self, degrees: float = 0.0, translate: float = 0.0, scale: tuple = (1.0, 1.0),
                 padding: str = "reflection", p: float = 0.5):
        super().__init__()
        if padding not in ("reflection", "zeros", "border"):
            raise ValueError(f"affine padding must be 'reflection', 'zeros' or 'border', got {padding!r}")
        if not (0 < scale[0] <= scale[1]):
            raise ValueError(f"affine scale range must be positive and increasing, got {scale}")
        self.degrees, self.translate, self.scale, self.padding, self.p = degrees, translate, tuple(scale), padding, p

    def sample(self, shape: torch.Size, device) -> dict:
        """Angles (B,) in degrees, shifts (B, 2) in pixels, zooms (B,) and the picked images (B,) bool."""
        b, h, w = shape[0], shape[-2], shape[-1]
        angle = torch.empty(b, device=device).uniform_(-self.degrees, self.degrees)
        shift = torch.empty(b, 2, device=device).uniform_(-self.translate, self.translate)
        shift[:, 0] *= w
        shift[:, 1] *= h
        zoom = torch.empty(b, device=device).uniform_(*self.scale)
        return {"angle": angle, "translate": shift, "scale": zoom, "picked": torch.rand(b, device=device) < self.p}

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> same shape; a new tensor unless p is 0."""
        if self.p <= 0:
            return x
        return self.warp(x, self.sample(x.shape, x.device), subset=x.device.type == "cpu")

    def warp(self, x: torch.Tensor, prm: dict, subset: bool) -> torch.Tensor:
        """Apply the draw ``prm`` (from :meth:`sample`): only the picked images are warped when ``subset``, else all
        of them and the others put back from ``x`` (no host sync). Both give the same output."""
        def warp(images, sel):
            return affine_warp(images, prm["angle"][sel], prm["translate"][sel], prm["scale"][sel], self.padding)

        return apply_to_picked(x, prm["picked"], warp, subset)

    def extra_repr(self) -> str:
        return (f"degrees={self.degrees}, translate={self.translate}, scale={self.scale}, padding={self.padding}, "
                f"p={self.p}")
