"""Losses are pure functions of tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vissl_lite import dist


def ntxent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather: bool = True) -> torch.Tensor:
    """NT-Xent, the SimCLR loss (Chen et al. 2020, eq. 1), averaged over all 2B anchors.

    Each of the 2B embeddings is an anchor; its positive is the other view of the same image, and every other
    embedding in the (global) batch is a negative. Embeddings are L2-normalised; similarity is cosine / temperature.

    Args:
        z1, z2: (B, D) projections of view 1 and view 2; row i of z1 and row i of z2 are a positive pair.
        gather: when torch.distributed is initialised, use embeddings of every rank as candidates (with gradient).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    with torch.autocast(z1.device.type, enabled=False):  # similarities / temperature need fp32, even under bf16
        return _ntxent(z1.float(), z2.float(), temperature, gather)


def _ntxent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool) -> torch.Tensor:
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D), anchors of this rank
    if gather and dist.is_distributed():
        z1_all = torch.cat(dist.all_gather_with_grad(F.normalize(z1.float(), dim=1)))  # (W*B, D)
        z2_all = torch.cat(dist.all_gather_with_grad(F.normalize(z2.float(), dim=1)))
        cand = torch.cat([z1_all, z2_all])  # (2WB, D)
        offset, total = dist.rank() * b, z1_all.shape[0]
    else:
        cand, offset, total = z, 0, b
    logits = z @ cand.T / temperature  # (2B, 2WB)
    i = torch.arange(b, device=z.device)
    self_idx = torch.cat([offset + i, total + offset + i])  # column of each anchor itself
    pos_idx = torch.cat([total + offset + i, offset + i])  # column of its positive
    logits[torch.arange(2 * b, device=z.device), self_idx] = float("-inf")
    return F.cross_entropy(logits, pos_idx)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over removed patches (mask == 1) of the per-patch mean squared error. pred, target: (B, L, K)."""
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, L)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element."""
    return F.mse_loss(pred.float(), target.float())
