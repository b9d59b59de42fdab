"""SimCLR: Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv:2002.05709).

Defaults follow the paper and its reference code: a 2-layer projection head whose hidden width equals the
backbone's feature width and whose output is 128-d, with BatchNorm after both layers (scale only on the output);
temperature 0.1 (the paper's ImageNet setting at batch 4096; its CIFAR-10 runs and small batches do better around
0.5, which the quickstart recipe uses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vissl_lite.heads import ProjectionMLP
from vissl_lite.losses import ntxent


class SimCLR(nn.Module):
    """Contrastive learning between two augmented views of each image.

    Args:
        backbone: a timm model built with ``num_classes=0``.
        proj_hidden_dim: hidden width of the projection head (0: the backbone's feature width).
        proj_dim: output width of the projection head.
        proj_layers: Linear layers in the projection head.
        proj_out_bn: BatchNorm (scale only) on the head's output, as in the reference code. Checkpoints written
            before this option existed have no output BN; ``runs.load_run`` rebuilds them without it.
        temperature: softmax temperature of NT-Xent.
    """

    views = 2

    def __init__(self, backbone: nn.Module, proj_hidden_dim: int = 0, proj_dim: int = 128, proj_layers: int = 2,
                 temperature: float = 0.1, proj_out_bn: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.backbone = backbone
        dim = backbone.num_features
        self.projector = ProjectionMLP(dim, proj_hidden_dim or dim, proj_dim, proj_layers, out_bn=proj_out_bn)
        self.temperature = temperature

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled backbone features: the representation every evaluation uses."""
        return self.backbone(x)

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if len(views) != 2:
            raise ValueError(f"SimCLR takes 2 views, got {len(views)}")
        b = views[0].shape[0]
        # One backbone pass over both views: BatchNorm normalises them together, as in the paper's global BN.
        z = self.projector(self.backbone(torch.cat(views)))  # (2B, proj_dim)
        z1, z2 = z[:b], z[b:]
        loss = ntxent(z1, z2, self.temperature)
        with torch.no_grad():
            zn = F.normalize(z.detach().float(), dim=1)
            sim = zn @ zn.T
            sim.fill_diagonal_(-2)
            target = torch.arange(2 * b, device=sim.device).roll(b)  # made on the device: no host sync
            pos_acc = (sim.argmax(1) == target).float().mean()  # does the other view rank first?
        return {"loss": loss, "pos_acc": pos_acc}
