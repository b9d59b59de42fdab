"""Everything torch.distributed. A single process never touches torch.distributed."""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun prepared (NCCL on CUDA, gloo otherwise) and return this rank's device:
    ``cuda:LOCAL_RANK`` on GPUs. A single process gets ``device`` back untouched."""
    if not launched_by_torchrun():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not is_distributed():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def cleanup() -> None:
    if is_distributed():
        tdist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each rank's gradient for every gathered slice and hands each rank the
    slice of its own input (torch.distributed.nn's all_gather, which is deprecated, does the same)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
        tdist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads)
        tdist.all_reduce(stacked)  # every rank's loss depends on every slice
        return stacked[tdist.get_rank()]


def all_gather_with_grad(x: torch.Tensor) -> list[torch.Tensor]:
    """Tensors of every rank; the gradient flows back to each rank's own tensor."""
    if not is_distributed():
        return [x]
    return list(_GatherWithGrad.apply(x))
