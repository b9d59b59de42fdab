"""Medical augmentation presets: batched view generators for radiology, pathology (H&E) and fundus photographs.

Same contract as :mod:`vissl_lite.augment.views`: ``aug(x) -> list[Tensor (B, C, size, size)]``, uint8 or float
input on any device, one random draw per sample from torch's global generator, output normalised float32.

Photo recipes (SimCLR's) assume that colour and left-right orientation carry no meaning. Medical images break both
assumptions in modality-specific ways, so each preset keeps the transformations that leave the diagnosis unchanged
and drops the rest. The intensity operations are written here as batched tensor maths (one random factor per image,
no per-sample Python). The crop and flips are the batched ``ResizedCropFlip`` the photo recipes use (kornia's crop
resized each image in a Python loop); the affine warp and the blur are this package's batched ``RandomAffine`` and
``RandomGaussianBlur``: their draws have the distribution of kornia's modules, for a given draw their outputs equal
kornia's (the affine's with ``align_corners=True``; tested), and on CPU they warp and blur the picked images only.
The elastic warp is kornia's.

``n_views=None`` (the default) makes as many views as the method needs (2 for SimCLR, 1 for MAE and DAE).
"""

from __future__ import annotations

import functools
import math

import kornia.augmentation as K
import torch
from torch import nn

from vissl_lite.augment.colour import RandomGaussianBlur
from vissl_lite.augment.geometry import RandomAffine, ResizedCropFlip
from vissl_lite.augment.views import _Views, default_stats

# Ruifrok & Johnston (2001) stain vectors (optical density of haematoxylin, eosin and DAB per RGB channel), as
# scikit-image's rgb2hed uses them (rows as published, not renormalised), so jitter ranges from papers carry over.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_OD_SCALE = -math.log(1e-6)  # scikit-image's unit: stain amounts in [0, ~0.4]; the published jitter ranges use it
_OD_FLOOR = 1.0 / 255  # darkest value a uint8 pixel can encode, so optical density stays finite


def _uniform(n: int, lo: float, hi: float, device) -> torch.Tensor:
    return torch.empty(n, 1, 1, 1, device=device).uniform_(lo, hi)


def _chosen(n: int, p: float, device) -> torch.Tensor:
    """(n, 1, 1, 1) bool: which images get a step applied with probability p."""
    return (torch.rand(n, 1, 1, 1, device=device) < p)


def random_rot90(x: torch.Tensor, p: float = 1.0, subset: bool | None = None) -> torch.Tensor:
    """Rotate each image by a random multiple of 90 degrees (0 kept with prob. 1 - p + p/4). Needs square images.

    Three batched rotations, no per-sample loop. ``subset`` (default: on CPU) rotates only the images drawn for
    each turn; otherwise (on a GPU, where sizing those subsets would be a host sync) each rotation is of the whole
    batch and ``torch.where`` picks per image. Both give the same output."""
    b = x.shape[0]
    k = torch.randint(0, 4, (b,), device=x.device) * (torch.rand(b, device=x.device) < p)
    if subset is None:
        subset = x.device.type == "cpu"
    if not subset:
        out = x
        for turns in (1, 2, 3):
            out = torch.where((k == turns).view(b, 1, 1, 1), torch.rot90(x, turns, dims=(2, 3)), out)
        return out
    out = x.clone()
    for turns in (1, 2, 3):
        idx = (k == turns).nonzero().squeeze(1)
        if idx.numel():
            out[idx] = torch.rot90(x[idx], turns, dims=(2, 3))
    return out


@functools.cache
def _stain_matrices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(hed_from_rgb, rgb_from_hed) as float32 on ``device``, copied there once (each copy would be a host sync);
    made outside inference mode, so a first call under it does not cache tensors autograd cannot save."""
    with torch.inference_mode(False):
        return _HED_FROM_RGB.to(device, torch.float32), _RGB_FROM_HED.to(device, torch.float32)


def intensity_jitter(x: torch.Tensor, brightness: float, contrast: float, p: float) -> torch.Tensor:
    """torchvision's multiplicative brightness (x * b) and contrast (blend with the image's mean gray), one factor
    per image drawn from [1 - s, 1 + s]; result clipped to [0, 1]."""
    b = x.shape[0]
    mask = _chosen(b, p, x.device)
    y = x * torch.where(mask, _uniform(b, 1 - brightness, 1 + brightness, x.device), 1.0)
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    c = torch.where(mask, _uniform(b, 1 - contrast, 1 + contrast, x.device), 1.0)
    return ((y - mean) * c + mean).clamp_(0, 1)


def gamma_jitter(x: torch.Tensor, gamma: tuple[float, float], p: float) -> torch.Tensor:
    """x ** g with log-uniform g in ``gamma`` per image (so g and 1/g are equally likely when the range is
    symmetric in log space): a monotone change of the intensity curve, as between exposures or detectors."""
    b = x.shape[0]
    g = torch.exp(_uniform(b, math.log(gamma[0]), math.log(gamma[1]), x.device))
    g = torch.where(_chosen(b, p, x.device), g, 1.0)
    return x.clamp(min=0).pow(g)


def window_jitter(x: torch.Tensor, amount: float, p: float) -> torch.Tensor:
    """Re-window each image as a reader would: new low and high ends drawn in [-a, a] and [1 - a, 1 + a], the range
    between mapped linearly to [0, 1] and clipped. Monotone, like the display window it imitates."""
    b = x.shape[0]
    mask = _chosen(b, p, x.device)
    lo = torch.where(mask, _uniform(b, -amount, amount, x.device), 0.0)
    hi = torch.where(mask, _uniform(b, 1 - amount, 1 + amount, x.device), 1.0)
    return ((x - lo) / (hi - lo)).clamp_(0, 1)


def gaussian_noise(x: torch.Tensor, std: float, p: float) -> torch.Tensor:
    """Additive N(0, s^2) noise with s uniform in [0, std] per image (detector noise varies by dose)."""
    b = x.shape[0]
    picked = _chosen(b, p, x.device)
    s = torch.where(picked, _uniform(b, 0.0, std, x.device), 0.0).to(x.dtype)
    if x.device.type != "cpu":  # sizing the picked subset would be a host sync
        return (x + torch.randn_like(x) * s).clamp_(0, 1)
    idx = picked.view(-1).nonzero()[:, 0]  # on CPU, draw noise for the picked images only
    out = x.clamp(0, 1)
    if len(idx):
        out[idx] = (x[idx] + torch.randn_like(x[idx]) * s[idx]).clamp_(0, 1)
    return out


def hed_jitter(x: torch.Tensor, sigma: float, p: float) -> torch.Tensor:
    """Stain jitter for H&E (Tellez et al. 2018, "Whole-slide mitosis detection in H&E breast histology using
    PHH3 as a reference to train distilled stain-invariant convolutional networks"): RGB -> optical density ->
    haematoxylin, eosin and DAB amounts (colour deconvolution), each scaled by a in [1 - sigma, 1 + sigma] and
    shifted by b in [-sigma, sigma] per image, then back to RGB. Models the spread of stain protocols and
    scanners, which plain hue jitter does not: it moves colours along the stains' own directions."""
    bsz = x.shape[0]
    mask = _chosen(bsz, p, x.device).view(bsz, 1, 1)
    hed_from_rgb, rgb_from_hed = _stain_matrices(x.device)
    od = -torch.log(x.clamp(min=_OD_FLOOR)).flatten(2) / _OD_SCALE  # (B, 3, HW)
    stains = torch.einsum("ij,bjn->bin", hed_from_rgb.T, od)
    alpha = torch.empty(bsz, 3, 1, device=x.device).uniform_(1 - sigma, 1 + sigma)
    beta = torch.empty(bsz, 3, 1, device=x.device).uniform_(-sigma, sigma)
    stains = torch.where(mask, stains * alpha + beta, stains)
    od = torch.einsum("ij,bjn->bin", rgb_from_hed.T, stains)
    rgb = torch.exp(-od * _OD_SCALE).view_as(x)
    # pixels that were not jittered come back exactly (float error aside); keep them bit-for-bit
    return torch.where(mask.view(bsz, 1, 1, 1), rgb.clamp_(0, 1), x)


class MedicalViews(_Views):
    """Configurable batched medical pipeline; the presets below choose its defaults per modality.

    Order: random resized crop -> flips / 90-degree rotations -> small affine -> elastic -> stain jitter (RGB
    only) -> window, brightness/contrast, gamma -> blur -> noise -> normalise.
    """

    def __init__(self, size: int, channels: int = 1, mean: tuple = (), std: tuple = (),
                 scale: tuple = (0.35, 1.0), ratio: tuple = (3 / 4, 4 / 3), p_hflip: float = 0.0,
                 p_vflip: float = 0.0, p_rot90: float = 0.0, degrees: float = 0.0, translate: float = 0.0,
                 affine_scale: tuple = (1.0, 1.0), p_affine: float = 0.0, affine_padding: str = "reflection",
                 p_elastic: float = 0.0,
                 elastic_alpha: float = 1.0, stain: float = 0.0, p_stain: float = 0.0, window: float = 0.0,
                 p_window: float = 0.0, brightness: float = 0.0, contrast: float = 0.0, p_intensity: float = 0.0,
                 gamma: tuple = (1.0, 1.0), p_gamma: float = 0.0, p_blur: float = 0.0, noise: float = 0.0,
                 p_noise: float = 0.0, n_views: int | None = None):
        mean, std = default_stats(channels, mean, std)
        super().__init__(channels, mean, std)
        if n_views is not None and n_views < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        if not (0 < gamma[0] <= gamma[1]):
            raise ValueError(f"gamma range must be positive and increasing, got {gamma}")
        self.n_views = n_views or 2
        self.p_rot90 = p_rot90
        self.stain, self.p_stain = (stain, p_stain) if channels == 3 else (0.0, 0.0)  # stains need colour
        self.window, self.p_window = window, p_window
        self.brightness, self.contrast, self.p_intensity = brightness, contrast, p_intensity
        self.gamma, self.p_gamma = tuple(gamma), p_gamma
        self.noise, self.p_noise = noise, p_noise
        self.geometry = ResizedCropFlip(size, scale, ratio, p_flip=p_hflip, p_vflip=p_vflip)
        late = []
        if p_affine:
            late.append(RandomAffine(degrees, translate, tuple(affine_scale), affine_padding, p=p_affine))
        if p_elastic:  # kornia's elastic field; sigma ~ 1/8 of the side keeps the warp smooth and anatomical
            sigma = max(2.0, size / 8)
            kernel = int(2 * round(3 * sigma) + 1)
            late.append(K.RandomElasticTransform(kernel_size=(kernel, kernel), sigma=(sigma, sigma),
                                                 alpha=(elastic_alpha, elastic_alpha), p=p_elastic))
        self.warp = nn.Sequential(*late)
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
        self.blur = RandomGaussianBlur(kernel, (0.1, 1.0), p=p_blur) if p_blur else nn.Identity()

    def one_view(self, x: torch.Tensor) -> torch.Tensor:
        x = self.geometry(x)
        if self.p_rot90:
            x = random_rot90(x, self.p_rot90)
        x = self.warp(x)
        if self.p_stain:
            x = hed_jitter(x, self.stain, self.p_stain)
        if self.p_window:
            x = window_jitter(x, self.window, self.p_window)
        if self.p_intensity:
            x = intensity_jitter(x, self.brightness, self.contrast, self.p_intensity)
        if self.p_gamma:
            x = gamma_jitter(x, self.gamma, self.p_gamma)
        x = self.blur(x)
        if self.p_noise:
            x = gaussian_noise(x, self.noise, self.p_noise)
        return x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.to_crop_input(x, self.geometry.size)  # one_view starts with the crop: its output is fresh
        return [self.view(x, self.one_view, self.geometry.size) for _ in range(self.n_views)]


class RadiologyViews(MedicalViews):
    """Grayscale radiology (X-ray, CT and MR slices).

    - No flips by default: anatomy is lateralised (the heart sits left in a chest X-ray), so a mirrored film is
      a different, rare finding (situs inversus), not the same image. Turn them on per axis with p_hflip / p_vflip
      for bodies parts that are symmetric.
    - Small rotations, shifts and zooms (10 degrees, 5%, 0.9-1.1): patient positioning varies by that much.
    - Window jitter, brightness/contrast and gamma: exposure, detector and the reader's display window change the
      intensity curve but not the anatomy. No hue or saturation: there is no colour to jitter.
    - Mild blur and Gaussian noise: resolution and dose differ between scanners.
    - Crops keep at least 35% of the image: a lesion can be small, and a tiny crop of a film is often all lung.
    """

    def __init__(self, size: int, channels: int = 1, mean: tuple = (), std: tuple = (),
                 scale: tuple = (0.35, 1.0), ratio: tuple = (3 / 4, 4 / 3), p_hflip: float = 0.0,
                 p_vflip: float = 0.0, degrees: float = 10.0, translate: float = 0.05,
                 affine_scale: tuple = (0.9, 1.1), p_affine: float = 0.5, p_elastic: float = 0.0,
                 elastic_alpha: float = 1.0, window: float = 0.1, p_window: float = 0.5, brightness: float = 0.3,
                 contrast: float = 0.3, p_intensity: float = 0.8, gamma: tuple = (0.7, 1.4), p_gamma: float = 0.5,
                 p_blur: float = 0.3, noise: float = 0.05, p_noise: float = 0.3, n_views: int | None = None):
        super().__init__(size, channels, mean, std, scale=scale, ratio=ratio, p_hflip=p_hflip, p_vflip=p_vflip,
                         degrees=degrees, translate=translate, affine_scale=affine_scale, p_affine=p_affine,
                         p_elastic=p_elastic, elastic_alpha=elastic_alpha, window=window, p_window=p_window,
                         brightness=brightness, contrast=contrast, p_intensity=p_intensity, gamma=gamma,
                         p_gamma=p_gamma, p_blur=p_blur, noise=noise, p_noise=p_noise, n_views=n_views)


class PathologyViews(MedicalViews):
    """H&E histopathology tiles.

    - Both flips and 90-degree rotations: a tissue section under the microscope has no up, down, left or right,
      and these eight symmetries need no interpolation.
    - Stain (HED) jitter instead of hue jitter: staining and scanners differ along the haematoxylin and eosin
      colour directions; shifting hue freely makes colours no slide has.
    - Mild brightness/contrast (scanner illumination) and blur (focus); crops from 20%: cells repeat over a tile,
      so small crops still show the same tissue type.
    """

    def __init__(self, size: int, channels: int = 3, mean: tuple = (), std: tuple = (),
                 scale: tuple = (0.2, 1.0), ratio: tuple = (3 / 4, 4 / 3), p_hflip: float = 0.5,
                 p_vflip: float = 0.5, p_rot90: float = 1.0, stain: float = 0.05, p_stain: float = 0.8,
                 brightness: float = 0.2, contrast: float = 0.2, p_intensity: float = 0.8, p_blur: float = 0.3,
                 n_views: int | None = None):
        super().__init__(size, channels, mean, std, scale=scale, ratio=ratio, p_hflip=p_hflip, p_vflip=p_vflip,
                         p_rot90=p_rot90, stain=stain, p_stain=p_stain, brightness=brightness, contrast=contrast,
                         p_intensity=p_intensity, p_blur=p_blur, n_views=n_views)


class FundusViews(MedicalViews):
    """Colour fundus photographs (retina).

    - Any rotation (corners filled black, like the background) and both flips: the eye is photographed through a
      round pupil at varying camera roll, and left and right eyes are mirror images, so orientation carries little
      of the grading signal.
    - Brightness, contrast and gamma: flash, pupil size and pigmentation change exposure. No hue jitter: lesion
      colour (red haemorrhages, yellow exudates) is the diagnosis.
    - Crops from 35%: lesions are small and spread over the retina.
    """

    def __init__(self, size: int, channels: int = 3, mean: tuple = (), std: tuple = (),
                 scale: tuple = (0.35, 1.0), ratio: tuple = (3 / 4, 4 / 3), p_hflip: float = 0.5,
                 p_vflip: float = 0.5, degrees: float = 180.0, p_affine: float = 0.8, brightness: float = 0.3,
                 contrast: float = 0.3, p_intensity: float = 0.8, gamma: tuple = (0.7, 1.4), p_gamma: float = 0.5,
                 p_blur: float = 0.3, n_views: int | None = None):
        super().__init__(size, channels, mean, std, scale=scale, ratio=ratio, p_hflip=p_hflip, p_vflip=p_vflip,
                         degrees=degrees, p_affine=p_affine, affine_padding="zeros", brightness=brightness,
                         contrast=contrast, p_intensity=p_intensity, gamma=gamma, p_gamma=p_gamma, p_blur=p_blur,
                         n_views=n_views)
