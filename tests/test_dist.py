"""SimCLR's loss across two gloo ranks matches one process on the same global batch, in value and gradient."""

import os
import socket

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from vissl_lite import dist
from vissl_lite.losses import ntxent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, x1: torch.Tensor, x2: torch.Tensor, w: torch.Tensor, out: dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b = x1.shape[0] // world
        weight = w.clone().requires_grad_(True)  # a shared "network": the same weights on every rank
        loss = ntxent(x1[rank * b:(rank + 1) * b] @ weight, x2[rank * b:(rank + 1) * b] @ weight, 0.5)
        loss.backward()
        grad = weight.grad.clone()
        tdist.all_reduce(grad)
        grad /= world  # what DDP does to parameter gradients
        out[rank] = (loss.detach(), grad, dist.rank(), dist.world_size())
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_ntxent_equals_single_process():
    torch.manual_seed(0)
    x1, x2, w = torch.randn(8, 6), torch.randn(8, 6), torch.randn(6, 4)
    weight = w.clone().requires_grad_(True)
    ref = ntxent(x1 @ weight, x2 @ weight, 0.5)  # one process, global batch of 8
    ref.backward()
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), x1, x2, w, out), nprocs=2, join=True)
    assert [out[r][2:] for r in range(2)] == [(0, 2), (1, 2)]
    assert torch.allclose((out[0][0] + out[1][0]) / 2, ref.detach(), atol=1e-5)
    for r in range(2):
        assert torch.allclose(out[r][1], weight.grad, atol=1e-5)  # equal across ranks and to one process
    assert not dist.is_distributed()  # this process never joined a group
