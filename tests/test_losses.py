import math

import pytest
import torch
import torch.nn.functional as F

from vissl_lite.losses import ntxent


def ntxent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """Naive loop over the 2B anchors, written from eq. 1 of the SimCLR paper."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z)
    b = n // 2
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        num = torch.exp(z[i] @ z[j] / t)
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(n) if k != i)
        total = total - torch.log(num / den)
    return total / n


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_ntxent_matches_naive_loop(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    assert torch.allclose(ntxent(z1, z2, t).double(), ntxent_reference(z1, z2, t), atol=1e-5)


def test_ntxent_symmetric_in_views():
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.allclose(ntxent(z1, z2, 0.2), ntxent(z2, z1, 0.2), atol=1e-6)


def test_ntxent_identical_embeddings_is_log_2n_minus_1():
    # every candidate is as similar as the positive: loss = -log(1 / (2n - 1))
    n = 7
    z = torch.ones(n, 3)
    assert ntxent(z, z.clone(), 0.3).item() == pytest.approx(math.log(2 * n - 1), rel=1e-5)


def test_ntxent_perfect_orthogonal_pairs_analytic():
    # positives identical, every other pair orthogonal: loss = -log(e^{1/t} / (e^{1/t} + 2n - 2))
    n, t = 4, 0.5
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert ntxent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-5)


def test_ntxent_invariant_to_embedding_scale_and_rejects_bad_shapes():
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    assert torch.allclose(ntxent(z1, z2, 0.1), ntxent(3 * z1, 0.5 * z2, 0.1), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        ntxent(z1, z2[:3], 0.1)
