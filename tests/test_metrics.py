"""Metrics against scikit-learn (a test-only dependency) and hand-computed cases."""

import pytest
import torch

from vissl_lite.eval.metrics import (
    average_precision,
    balanced_accuracy,
    binary_auroc,
    classification_report,
    confusion_matrix,
    multilabel_report,
    topk_accuracy,
)

sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is a dev extra: pip install -e '.[dev]'")


def test_hand_computed_cases():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.3, 0.6]])
    y = torch.tensor([0, 1, 2, 2])
    assert topk_accuracy(scores, y, 1) == 75.0 and topk_accuracy(scores, y, 2) == 100.0
    assert confusion_matrix(scores.argmax(1), y, 3).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert balanced_accuracy(scores.argmax(1), y, 3) == pytest.approx(100 * (1 + 1 + 0.5) / 3)
    assert binary_auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert binary_auroc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5  # a tie counts half
    assert binary_auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])) is None  # one class only


@pytest.mark.parametrize("seed", range(3))
def test_single_label_against_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (300,), generator=g)
    scores = torch.randn(300, 4, generator=g) + torch.nn.functional.one_hot(y, 4) * 1.0
    scores = (scores * 4).round() / 4  # plenty of ties
    r = classification_report(scores.softmax(1), y, 4)
    probs = scores.softmax(1).numpy()
    assert r["top1"] == pytest.approx(100 * sk.accuracy_score(y, probs.argmax(1)))
    assert r["balanced_accuracy"] == pytest.approx(100 * sk.balanced_accuracy_score(y, probs.argmax(1)))
    assert r["auroc_macro"] == pytest.approx(100 * sk.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert r["confusion_matrix"] == sk.confusion_matrix(y, probs.argmax(1), labels=range(4)).tolist()
    for c in range(4):
        assert r["auroc_per_class"][c] == pytest.approx(100 * sk.roc_auc_score(y == c, probs[:, c]))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_a_class_absent_from_the_split():
    y = torch.tensor([0, 0, 1, 1, 0])  # class 2 never occurs
    scores = torch.tensor([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    r = classification_report(scores, y, 3)
    assert r["auroc_per_class"][2] is None and r["auroc_classes"] == 2
    assert r["auroc_macro"] == pytest.approx(100 * (sk.roc_auc_score(y == 0, scores[:, 0]) +
                                                   sk.roc_auc_score(y == 1, scores[:, 1])) / 2)
    assert r["balanced_accuracy"] == pytest.approx(100 * sk.balanced_accuracy_score(y, scores.argmax(1)))


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_against_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(200, 5, generator=g) < 0.3).long()
    y[:, 4] = 0  # a label with no positives: undefined, left out of the means
    scores = ((torch.randn(200, 5, generator=g) + y * 1.5) * 3).round() / 3
    r = multilabel_report(scores, y)
    for k in range(4):
        assert r["auroc_per_label"][k] == pytest.approx(100 * sk.roc_auc_score(y[:, k], scores[:, k]))
        assert r["ap_per_label"][k] == pytest.approx(100 * sk.average_precision_score(y[:, k], scores[:, k]))
    assert r["auroc_per_label"][4] is None and r["ap_per_label"][4] is None and r["auroc_labels"] == 4
    assert r["map"] == pytest.approx(sum(r["ap_per_label"][:4]) / 4)
    assert average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 0, 1])) == pytest.approx(
        sk.average_precision_score([1, 0, 1], [0.9, 0.8, 0.1]))
