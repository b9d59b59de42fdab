"""Linear probe: BatchNorm1d(affine=False) + Linear trained on cached frozen features.

The BatchNorm without affine parameters standardises each feature with training-set statistics, so one learning
rate sweep fits backbones whose features have very different scales (MAE's linear probe does the same).
The learning rate is chosen on the validation split; test is touched once, for the chosen head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vissl_lite.eval.metrics import logits_report, selection_score


def protocol_text(pooling: str, dim: int, lrs: list, epochs: int, batch_size: int, view: str,
                  multilabel: bool = False) -> str:
    loss, pick = ("BCE per label", "val mean AUROC") if multilabel else ("cross-entropy", "val top-1")
    return (f"frozen backbone features: {pooling} (D={dim}), {view}; extracted once and cached; "
            f"head BatchNorm1d(affine=False)+Linear, {loss}; SGD momentum 0.9, no weight decay, cosine schedule, "
            f"{epochs} epochs, batch {batch_size}; lr sweep {list(lrs)} chosen on {pick}; reported on test")


def train_head(x: torch.Tensor, y: torch.Tensor, num_classes: int, lr: float, epochs: int, batch_size: int,
               seed: int = 0) -> nn.Module:
    """Fit BN+Linear on features ``x`` (N, D): cross-entropy for integer labels (N,), BCE for 0/1 labels (N, K)."""
    criterion = F.binary_cross_entropy_with_logits if y.ndim == 2 else F.cross_entropy
    g = torch.Generator().manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm1d(x.shape[1], affine=False), nn.Linear(x.shape[1], num_classes)).to(x.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head[1].reset_parameters()
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    n = len(x)
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    head.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(x.device)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = criterion(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return head.eval()


@torch.no_grad()
def _score(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return selection_score(head(x), y)


def fit_linear_probe(train: tuple, val: tuple, test: tuple, num_classes: int, lrs: list, epochs: int = 100,
                     batch_size: int = 256, seed: int = 0) -> dict:
    """Sweep ``lrs`` on (features, labels) tuples; pick on val; report the picked head on test.

    Single-label: ``top1`` plus every metric of :func:`classification_report` under ``metrics``. Multi-label
    (labels (N, K)): ``auroc_mean`` and ``map`` plus :func:`multilabel_report` under ``metrics``."""
    multilabel = train[1].ndim == 2
    for name, (x, y) in (("train", train), ("val", val), ("test", test)):
        if len(x) == 0:
            raise ValueError(f"the {name} split is empty; the probe needs labeled train, val and test splits")
        if (y < 0).any():
            raise ValueError(f"the {name} split has unlabeled images (label -1); the probe needs labels")
    key = "val_auroc_mean" if multilabel else "val_top1"
    sweep = []
    for lr in lrs:
        head = train_head(train[0], train[1], num_classes, float(lr), epochs, batch_size, seed)
        sweep.append({"lr": float(lr), key: _score(head, *val), "head": head})
    best = max(sweep, key=lambda r: r[key])
    with torch.no_grad():
        logits = best["head"](test[0])
    report = logits_report(logits, test[1], num_classes)
    if multilabel:
        headline = {"auroc_mean": report["auroc_mean"], "map": report["map"]}
    else:
        headline = {"top1": report["top1"], "train_top1": _score(best["head"], *train)}
    return {
        **headline, "split": "test", key: best[key], "lr": best["lr"], "metrics": report,
        "sweep": [{k: v for k, v in r.items() if k != "head"} for r in sweep],
        "n_train": len(train[1]), "n_val": len(val[1]), "n_test": len(test[1]),
    }
