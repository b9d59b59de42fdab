"""Weighted k-nearest-neighbour classification on frozen features.

The protocol of Wu et al. 2018 (instance discrimination), used by DINO and solo-learn: features are L2-normalised,
the k training features most cosine-similar to a query vote for their class with weight exp(similarity / T).
Defaults k = 20 and k = 200 with T = 0.07 are those papers' settings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vissl_lite.eval.metrics import classification_report


@torch.no_grad()
def knn_predict(train_x: torch.Tensor, train_y: torch.Tensor, query_x: torch.Tensor, num_classes: int, k: int = 20,
                temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class scores (Q, num_classes) for each query, from its ``k`` nearest training features.

    Args:
        train_x: (N, D) features; train_y: (N,) integer labels in [0, num_classes).
        query_x: (Q, D) features.
    """
    if train_y.ndim != 1:
        raise ValueError(f"kNN takes single-label data; labels have shape {tuple(train_y.shape)}")
    bank = F.normalize(train_x.float(), dim=1)  # (N, D)
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(query_x), chunk):  # (chunk, N) similarities at a time bound the memory
        q = F.normalize(query_x[start:start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (c, k)
        weight = (sim / temperature).exp()
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, train_y[idx], weight)
        scores.append(votes)
    return torch.cat(scores)


def knn_eval(train: tuple, test: tuple, num_classes: int, ks: list | tuple = (20, 200),
             temperature: float = 0.07) -> dict:
    """Top-1 (percent) of weighted kNN for each k: ``{"top1": {k: acc}, "best_k", ...}``."""
    if (train[1] < 0).any():
        raise ValueError("kNN needs labels, but the train split has unlabeled images (label -1)")
    if (test[1] < 0).any():
        raise ValueError("kNN needs labels, but the test split has unlabeled images (label -1)")
    top1, metrics = {}, {}
    for k in ks:
        votes = knn_predict(train[0], train[1], test[0], num_classes, int(k), temperature)
        report = classification_report(votes / votes.sum(1, keepdim=True).clamp_min(1e-12), test[1], num_classes)
        top1[int(k)], metrics[int(k)] = report["top1"], report
    return {"top1": top1, "temperature": temperature, "metrics": metrics, "n_train": len(train[1]),
            "n_test": len(test[1])}


def knn_protocol(pooling: str, dim: int, ks, temperature: float, view: str) -> str:
    return (f"frozen backbone features: {pooling} (D={dim}), {view}; L2-normalised; weighted kNN "
            f"(weights exp(cos/T), T={temperature}) with k in {list(ks)}; bank = train split; reported on test")
