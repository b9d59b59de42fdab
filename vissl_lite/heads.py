"""Heads that sit on top of a backbone."""

from __future__ import annotations

from torch import nn


class ProjectionMLP(nn.Sequential):
    """SimCLR's projection g(.): Linear-BN-ReLU per hidden layer, then Linear to ``out_dim``.

    The paper describes Linear-ReLU-Linear; its reference code adds BatchNorm after every hidden Linear, and
    SimCLR v2 found deeper heads help. ``num_layers=2`` is v1.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2):
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        super().__init__(*layers)
