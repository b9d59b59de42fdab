"""Heads that sit on top of a backbone: SimCLR's projection, pixel decoders for MAE and DAE, patchify."""

from __future__ import annotations

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn


class ProjectionMLP(nn.Sequential):
    """SimCLR's projection g(.): Linear-BN-ReLU per hidden layer, then Linear to ``out_dim`` (BatchNorm'd too when
    ``out_bn``).

    The paper describes Linear-ReLU-Linear. Its reference code (google-research/simclr, ``projection_head``) puts
    BatchNorm after every Linear: hidden layers with a bias and ReLU, the output layer with neither, and its BN with
    a learned scale but no shift (``center=False``). ``out_bn`` is that output BN; its shift stays frozen at zero.
    SimCLR v2 found deeper heads help; ``num_layers=2`` is v1.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, out_bn: bool = True):
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not out_bn))
        if out_bn:
            norm = nn.BatchNorm1d(out_dim)
            norm.bias.requires_grad_(False)  # scale only: a shared shift would move every embedding before L2-norm
            layers.append(norm)
        super().__init__(*layers)


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C) with L = (H/p)*(W/p), patches in row-major order, pixels as (p, p, C)."""
    b, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by patch size {p}")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, p: int, c: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, L, p*p*C) -> (B, C, H, W)."""
    b = x.shape[0]
    x = x.reshape(b, h // p, w // p, p, p, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


class TokenDecoder(nn.Module):
    """A light ViT decoder: project encoder tokens, add fixed 2-D sin-cos positions, run timm Blocks, predict the
    pixels of every patch. With ``ids_restore`` it also fills in mask tokens for patches the encoder never saw
    (MAE, built with ``mask_token=True``); without, every patch token is present (DAE on a ViT).

    Args:
        grid: (rows, cols) of patches.
        num_prefix: encoder prefix tokens (cls, registers) that lead the sequence; they attend but are not decoded.
    """

    def __init__(self, grid: tuple[int, int], in_dim: int, dim: int, depth: int, heads: int, out_dim: int,
                 num_prefix: int = 0, mask_token: bool = False):
        super().__init__()
        self.num_prefix = num_prefix
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
        pos = build_sincos2d_pos_embed(list(grid), dim)  # (L, dim), fixed as in MAE
        self.register_buffer("pos", pos[None].float(), persistent=False)  # (1, L, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, out_dim)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(tokens)  # (B, P + L_vis, dim)
        prefix, patches = x[:, :self.num_prefix], x[:, self.num_prefix:]
        if ids_restore is not None:
            if self.mask_token is None:
                raise ValueError("this decoder was built without a mask token (mask_token=False)")
            b, length = ids_restore.shape
            fill = self.mask_token.expand(b, length - patches.shape[1], -1)
            patches = torch.cat([patches, fill], dim=1)  # (B, L, dim) in shuffled order
            patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, patches.shape[-1]))
        x = torch.cat([prefix, patches + self.pos], dim=1)
        x = self.norm(self.blocks(x))
        return self.pred(x[:, self.num_prefix:])  # (B, L, out_dim)


class ConvDecoder(nn.Module):
    """Upsample a CNN's final feature map (B, C, h, w) back to (B, out_chans, H, W): a 1x1 projection, then
    (nearest x2, 3x3 conv, BN, ReLU) per doubling with halving widths, then a 3x3 conv to pixels."""

    def __init__(self, in_dim: int, out_chans: int, scale: int, width: int = 256):
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise ValueError(f"ConvDecoder needs a power-of-two upsampling factor, got {scale}")
        layers: list[nn.Module] = [nn.Conv2d(in_dim, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        dim = width
        for _ in range(scale.bit_length() - 1):
            nxt = max(32, dim // 2)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim, nxt, 3, padding=1, bias=False),
                       nn.BatchNorm2d(nxt), nn.ReLU(inplace=True)]
            dim = nxt
        layers.append(nn.Conv2d(dim, out_chans, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats)
