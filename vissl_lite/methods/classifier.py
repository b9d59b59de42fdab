"""Supervised classifier: the backbone plus a linear head, trained end to end. Fine-tuning (``vissl-lite
finetune``) runs it through the same loop as the self-supervised methods.

Regularisers follow common fine-tuning recipes (e.g. MAE's, He et al. 2022, Appendix A.1): label smoothing 0.1 and,
optionally, mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) through timm's batch mixer. Mixup and CutMix are
off by default: with a few hundred labels they cost more steps than a CPU run affords.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn


class Classifier(nn.Module):
    """``head(backbone(x))`` with cross-entropy (single-label) or per-label BCE (multi-label).

    Args:
        backbone: a timm model built with ``num_classes=0``.
        num_classes: classes (single-label) or labels (multi-label); the fine-tune command sets it from the data.
        multilabel: labels are (B, K) 0/1 rows; the loss is BCE per label.
        label_smoothing: smoothing of the targets (for BCE: towards 0.5).
        mixup: mixup alpha (0: off).
        cutmix: CutMix alpha (0: off).
        mix_prob: probability that a batch is mixed when mixup or cutmix is on.
    """

    views = 1

    def __init__(self, backbone: nn.Module, num_classes: int = 0, multilabel: bool = False,
                 label_smoothing: float = 0.1, mixup: float = 0.0, cutmix: float = 0.0, mix_prob: float = 1.0):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"the classifier needs num_classes >= 1 (fine-tuning sets it from the data), got "
                             f"{num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if (mixup or cutmix) and multilabel:
            raise ValueError("mixup/cutmix are implemented for single-label data only; set mixup=0,cutmix=0")
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)  # a small head does not swamp pretrained features early
        nn.init.zeros_(self.head.bias)
        self.num_classes, self.multilabel, self.label_smoothing = num_classes, multilabel, label_smoothing
        self.mixer = None
        if mixup > 0 or cutmix > 0:
            self.mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mix_prob, label_smoothing=label_smoothing,
                               num_classes=num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled backbone features."""
        return self.backbone(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError("the classifier needs labels; pass labeled data")
        x = views[0]
        if self.training and self.mixer is not None:
            x, soft = self.mixer(x, labels)  # timm mixes in place and returns smoothed soft targets
            logits = self.logits(x)
            return {"loss": SoftTargetCrossEntropy()(logits.float(), soft)}
        logits = self.logits(x).float()
        if self.multilabel:
            target = labels.float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            return {"loss": F.binary_cross_entropy_with_logits(logits, target)}
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean() * 100  # percent, as every other top-1
        return {"loss": loss, "train_top1": acc}
