"""Classification metrics as pure functions of scores and labels (torch, any device).

Single-label: top-1/top-k accuracy, balanced accuracy, confusion matrix, one-vs-rest AUROC per class and their
macro mean. Multi-label (labels (N, K) of 0/1): AUROC and average precision per label and their means. AUROC is
undefined for a class with no positives or no negatives in the split; it is reported as None and left out of the
mean, which says how many classes it covers.
"""

from __future__ import annotations

import torch


def topk_accuracy(scores: torch.Tensor, y: torch.Tensor, k: int = 1) -> float:
    """Percent of rows whose true class is among the ``k`` highest scores. Ties go to the lower class index, as
    ``argmax`` breaks them, so top-1 always agrees with the predictions and the confusion matrix."""
    true = scores.gather(1, y[:, None])  # (N, 1)
    index = torch.arange(scores.shape[1], device=scores.device)
    rank = (scores > true).sum(1) + ((scores == true) & (index < y[:, None])).sum(1)
    return (rank < k).float().mean().item() * 100


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts; row = true class, column = predicted class."""
    return torch.bincount(y * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """Mean recall over the classes present in ``y`` (percent)."""
    cm = confusion_matrix(pred, y, num_classes).float()
    support = cm.sum(dim=1)
    present = support > 0
    return (cm.diag()[present] / support[present]).mean().item() * 100


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``x`` with ties sharing their average rank."""
    order = torch.argsort(x)
    sorted_x = x[order]
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64, device=x.device)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=torch.float64, device=x.device).index_add_(
        0, inverse, ranks[order])
    ranks[order] = (sums / counts)[inverse]
    return ranks


def binary_auroc(scores: torch.Tensor, target: torch.Tensor) -> float | None:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half); None without both classes."""
    target = target.bool()
    n_pos, n_neg = int(target.sum()), int((~target).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(scores.double())
    return ((ranks[target].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).item()


def average_precision(scores: torch.Tensor, target: torch.Tensor) -> float | None:
    """Area under the precision-recall curve as the step sum of precision x recall increments over the distinct
    score thresholds (scikit-learn's definition); None without positives."""
    target = target.double()
    n_pos = target.sum()
    if n_pos == 0:
        return None
    order = torch.argsort(scores, descending=True)
    s, t = scores[order], target[order]
    tp = torch.cumsum(t, 0)
    last = torch.ones_like(s, dtype=torch.bool)  # the last row of each run of tied scores is a threshold
    last[:-1] = s[1:] != s[:-1]
    tp, seen = tp[last], torch.arange(1, len(s) + 1, device=s.device, dtype=torch.float64)[last]
    precision, recall = tp / seen, tp / n_pos
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return (steps * precision).sum().item()


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def classification_report(scores: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """All single-label metrics for class scores (N, C) (logits or probabilities) and labels (N,)."""
    pred = scores.argmax(dim=1)
    per_class = [binary_auroc(scores[:, c], y == c) for c in range(num_classes)]
    macro = _mean_defined(per_class)
    return {
        "top1": topk_accuracy(scores, y, 1),
        f"top{min(5, num_classes)}": topk_accuracy(scores, y, 5),
        "balanced_accuracy": balanced_accuracy(pred, y, num_classes),
        "auroc_macro": None if macro is None else macro * 100,
        "auroc_per_class": [None if a is None else a * 100 for a in per_class],
        "auroc_classes": sum(a is not None for a in per_class),
        "confusion_matrix": confusion_matrix(pred, y, num_classes).tolist(),
        "predicted_classes": int(pred.unique().numel()),  # 1: the model gives every image the same class
        "n": len(y),
    }


def multilabel_report(scores: torch.Tensor, y: torch.Tensor) -> dict:
    """Per-label and mean AUROC and average precision (mAP) for scores (N, K) and 0/1 labels (N, K)."""
    auroc = [binary_auroc(scores[:, k], y[:, k]) for k in range(y.shape[1])]
    ap = [average_precision(scores[:, k], y[:, k]) for k in range(y.shape[1])]
    mean_auroc, mean_ap = _mean_defined(auroc), _mean_defined(ap)
    return {
        "auroc_mean": None if mean_auroc is None else mean_auroc * 100,
        "map": None if mean_ap is None else mean_ap * 100,
        "auroc_per_label": [None if a is None else a * 100 for a in auroc],
        "ap_per_label": [None if a is None else a * 100 for a in ap],
        "auroc_labels": sum(a is not None for a in auroc),
        "n": len(y),
    }


def logits_report(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """:func:`multilabel_report` for (N, K) 0/1 labels, else :func:`classification_report` of the softmax."""
    if y.ndim == 2:
        return multilabel_report(logits, y)
    return classification_report(logits.softmax(1), y, num_classes)


def selection_score(logits: torch.Tensor, y: torch.Tensor) -> float:
    """What evaluations select on (validation): top-1 for single-label data, mean AUROC for multi-label data
    (0 when undefined), in percent."""
    if y.ndim == 2:
        return multilabel_report(logits, y)["auroc_mean"] or 0.0
    return topk_accuracy(logits, y, 1)
