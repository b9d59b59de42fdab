"""Denoising autoencoder: Vincent, Larochelle, Bengio and Manzagol, "Extracting and Composing Robust Features
with Denoising Autoencoders", ICML 2008; for ViTs, the findings of Chen, Liu, Xie and He, "Deconstructing
Denoising Diffusion Models for Self-Supervised Learning" (l-DAE, 2024): additive Gaussian noise works, a light
decoder suffices and predicting the clean image is a sound target.

The method corrupts its own input (the corruption is what it learns to undo, so it lives here, not in augment/)
and reconstructs the clean image, or the noise. Corruption happens in normalised pixel space: ``sigma`` is in
units of the normalisation std. Defaults are our choice for small images, not a paper's: Gaussian noise with
sigma 0.5, clean-image target, loss on every pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vissl_lite.backbones import in_chans_of, is_vit
from vissl_lite.heads import ConvDecoder, TokenDecoder, unpatchify
from vissl_lite.losses import mse

NOISES = ("gaussian", "mask", "salt_pepper")


class DAE(nn.Module):
    """Denoising autoencoder on any timm CNN (conv decoder on the last feature map) or ViT (Block decoder).

    Args:
        backbone: a timm model built with num_classes=0.
        noise: 'gaussian' (additive), 'mask' (masking noise: pixels or patches set to 0, the mean colour after
            normalisation) or 'salt_pepper' (pixels set to the batch's per-channel min or max).
        sigma: Gaussian std; with ``sigma_max`` > ``sigma``, each sample draws its std from U[sigma, sigma_max].
        mask_ratio: share of pixels (or patches) masked by the 'mask' noise.
        mask_patch: 0 masks single pixels; p > 0 masks p x p patches.
        sp_ratio: share of pixels hit by salt-and-pepper noise (half salt, half pepper).
        target: 'clean' (reconstruct the image) or 'noise' (predict corrupted minus clean).
        loss_on: 'all' pixels, or only the 'corrupted' ones.
        decoder_dim: ViT decoder width / CNN decoder's first width. decoder_depth, decoder_heads: ViT decoder.
    """

    views = 1

    def __init__(self, backbone: nn.Module, noise: str = "gaussian", sigma: float = 0.5, sigma_max: float = 0.0,
                 mask_ratio: float = 0.5, mask_patch: int = 0, sp_ratio: float = 0.1, target: str = "clean",
                 loss_on: str = "all", decoder_dim: int = 256, decoder_depth: int = 2, decoder_heads: int = 8):
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"unknown noise '{noise}'. Valid: {', '.join(NOISES)}")
        if target not in ("clean", "noise"):
            raise ValueError(f"target must be 'clean' or 'noise', got '{target}'")
        if loss_on not in ("all", "corrupted"):
            raise ValueError(f"loss_on must be 'all' or 'corrupted', got '{loss_on}'")
        if sigma <= 0 or (sigma_max and sigma_max < sigma):
            raise ValueError(f"need 0 < sigma <= sigma_max (or sigma_max 0), got sigma={sigma}, sigma_max={sigma_max}")
        # 0 corrupts nothing and 1 everything: either leaves nothing to learn from the uncorrupted part
        for name, ratio in (("mask_ratio", mask_ratio), ("sp_ratio", sp_ratio)):
            if not 0.0 < ratio < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {ratio}")
        if mask_patch < 0:
            raise ValueError(f"mask_patch must be 0 (single pixels) or a patch side >= 1, got {mask_patch}")
        for name, size in (("decoder_dim", decoder_dim), ("decoder_depth", decoder_depth),
                           ("decoder_heads", decoder_heads)):
            if size < 1:
                raise ValueError(f"{name} must be >= 1, got {size}")
        self.backbone = backbone
        self.noise, self.sigma, self.sigma_max = noise, sigma, sigma_max
        self.mask_ratio, self.mask_patch, self.sp_ratio = mask_ratio, mask_patch, sp_ratio
        self.target_kind, self.loss_on = target, loss_on
        self.in_chans = in_chans_of(backbone)
        if is_vit(backbone):
            pe = backbone.patch_embed
            self.patch = pe.patch_size[0]
            self.decoder = TokenDecoder(tuple(pe.grid_size), backbone.embed_dim, decoder_dim, decoder_depth,
                                        decoder_heads, self.patch ** 2 * self.in_chans, backbone.num_prefix_tokens)
        else:
            self.patch = 0
            reduction = backbone.feature_info[-1]["reduction"]
            self.decoder = ConvDecoder(backbone.num_features, self.in_chans, reduction, decoder_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features of the clean image."""
        return self.backbone(x)

    def corrupt(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy (B, C, H, W), where (B, 1, H, W) with 1 at corrupted pixels)."""
        b, _, h, w = x.shape
        if self.noise == "gaussian":
            if self.sigma_max:
                std = torch.empty(b, 1, 1, 1, device=x.device).uniform_(self.sigma, self.sigma_max)
            else:
                std = torch.full((b, 1, 1, 1), self.sigma, device=x.device)
            return x + std * torch.randn_like(x), torch.ones(b, 1, h, w, device=x.device)
        if self.noise == "mask":
            p = self.mask_patch or 1
            where = (torch.rand(b, 1, -(-h // p), -(-w // p), device=x.device) < self.mask_ratio).float()
            where = F.interpolate(where, scale_factor=p, mode="nearest")[..., :h, :w] if p > 1 else where
            return x * (1 - where), where
        u = torch.rand(b, 1, h, w, device=x.device)
        salt, pepper = (u < self.sp_ratio / 2).float(), ((u >= self.sp_ratio / 2) & (u < self.sp_ratio)).float()
        hi = x.amax(dim=(0, 2, 3), keepdim=True)
        lo = x.amin(dim=(0, 2, 3), keepdim=True)
        noisy = x * (1 - salt - pepper) + hi * salt + lo * pepper
        return noisy, salt + pepper

    def decode(self, noisy: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(noisy)  # ViT: (B, P + L, D); CNN: (B, C', h, w)
        h, w = noisy.shape[-2:]
        if self.patch:
            return unpatchify(self.decoder(feats), self.patch, self.in_chans, h, w)
        out = self.decoder(feats)
        return out if out.shape[-2:] == (h, w) else F.interpolate(out, size=(h, w), mode="bilinear")

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if len(views) != 1:
            raise ValueError(f"DAE takes 1 view, got {len(views)} (use --augment crop_flip)")
        x = views[0]  # (B, C, H, W), normalised
        noisy, where = self.corrupt(x)
        pred = self.decode(noisy)
        target = x if self.target_kind == "clean" else noisy - x
        if self.loss_on == "all":
            return {"loss": mse(pred, target)}
        err = (pred.float() - target.float()).pow(2).mean(dim=1, keepdim=True)  # (B, 1, H, W)
        return {"loss": (err * where).sum() / where.sum().clamp_min(1)}

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images for display, in normalised pixel space: the corrupted input and the clean-image estimate."""
        noisy, where = self.corrupt(imgs)
        pred = self.decode(noisy).float()
        clean = pred if self.target_kind == "clean" else noisy - pred
        return {"input": noisy, "reconstruction": clean, "corrupted": where}
