"""Masked autoencoder: He, Chen, Xie, Li, Dollár and Girshick, "Masked Autoencoders Are Scalable Vision
Learners", CVPR 2022 (arXiv:2111.06377).

Defaults follow the paper: mask ratio 0.75, decoder 512 wide and 8 blocks deep (16 heads), loss on masked patches
only, ``norm_pix_loss`` off (the paper's best ImageNet results turn it on; it makes the target each patch's
standardised pixels). Masking happens after position embeddings are added and never touches prefix tokens
(cls, registers), so the encoder knows where each visible patch came from.
"""

from __future__ import annotations

import torch
from torch import nn

from vissl_lite.backbones import is_vit
from vissl_lite.heads import TokenDecoder, patchify, unpatchify
from vissl_lite.losses import masked_mse


def random_masking(x: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random ``round(L * (1 - mask_ratio))`` of the L tokens of each sample.

    Args:
        x: (B, L, D) patch tokens (no prefix tokens).

    Returns:
        visible (B, L_keep, D); mask (B, L), 0 is keep, 1 is remove; ids_restore (B, L), which puts a sequence in
        shuffled order (visible first) back in patch order.
    """
    b, length, d = x.shape
    keep = int(round(length * (1 - mask_ratio)))
    noise = torch.rand(b, length, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the first `keep` are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    visible = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, length, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return visible, mask, ids_restore


class MAE(nn.Module):
    """Masked autoencoder on a timm VisionTransformer.

    Args:
        backbone: a timm ``VisionTransformer`` (any img_size, patch_size, in_chans) built with num_classes=0.
        mask_ratio: share of patch tokens removed per sample.
        decoder_dim, decoder_depth, decoder_heads: the light decoder (paper: 512, 8, 16).
        norm_pix_loss: regress each patch's pixels standardised by that patch's own mean and variance.
    """

    views = 1

    def __init__(self, backbone: nn.Module, mask_ratio: float = 0.75, decoder_dim: int = 512, decoder_depth: int = 8,
                 decoder_heads: int = 16, norm_pix_loss: bool = False):
        super().__init__()
        if not is_vit(backbone):
            raise ValueError(f"MAE masks ViT patch tokens; '{type(backbone).__name__}' is not a timm "
                             "VisionTransformer. Pick a ViT (e.g. --backbone vit_tiny_patch16_224) or use "
                             "--method dae / simclr for CNNs")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.backbone = backbone
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        pe = backbone.patch_embed
        self.patch, self.grid, self.in_chans = pe.patch_size[0], tuple(pe.grid_size), pe.proj.in_channels
        self.num_prefix = backbone.num_prefix_tokens
        self.decoder = TokenDecoder(self.grid, backbone.embed_dim, decoder_dim, decoder_depth, decoder_heads,
                                    self.patch ** 2 * self.in_chans, self.num_prefix, mask_token=True)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features of the unmasked image (the backbone's own pooling: cls token by default)."""
        return self.backbone(x)

    def forward_encoder(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bb = self.backbone
        x = bb._pos_embed(bb.patch_embed(imgs))  # (B, P + L, D): prefix tokens first, positions added
        prefix, patches = x[:, :self.num_prefix], x[:, self.num_prefix:]
        visible, mask, ids_restore = random_masking(patches, self.mask_ratio)
        x = bb.norm_pre(torch.cat([prefix, visible], dim=1))  # (B, P + L_keep, D)
        x = bb.norm(bb.blocks(x))
        return x, mask, ids_restore

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        t = patchify(imgs, self.patch)  # (B, L, p*p*C)
        if self.norm_pix_loss:
            mean, var = t.mean(dim=-1, keepdim=True), t.var(dim=-1, keepdim=True)
            t = (t - mean) / (var + 1e-6).sqrt()
        return t

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if len(views) != 1:
            raise ValueError(f"MAE takes 1 view, got {len(views)} (use --augment crop_flip)")
        imgs = views[0]  # (B, C, H, W)
        latent, mask, ids_restore = self.forward_encoder(imgs)
        pred = self.decoder(latent, ids_restore)  # (B, L, p*p*C)
        loss = masked_mse(pred, self.target(imgs), mask)
        return {"loss": loss}

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images for display, in the input's normalised pixel space: the masked input (removed patches zeroed)
        and the reconstruction (predicted removed patches pasted among the visible ones). With norm_pix_loss the
        prediction is mapped back through each patch's own mean and variance."""
        latent, mask, ids_restore = self.forward_encoder(imgs)
        pred = self.decoder(latent, ids_restore).float()
        patches = patchify(imgs, self.patch)
        if self.norm_pix_loss:
            mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        m = mask[..., None]
        h, w = imgs.shape[-2:]
        return {
            "input": unpatchify(patches * (1 - m), self.patch, self.in_chans, h, w),
            "reconstruction": unpatchify(patches * (1 - m) + pred * m, self.patch, self.in_chans, h, w),
            "corrupted": unpatchify(m.expand_as(patches), self.patch, self.in_chans, h, w)[:, :1],
        }
