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


def _torchrun(npz, out, *extra):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "vissl_lite.cli", "pretrain", "--data", str(npz), "--out", str(out), "--backbone", "test_resnet",
           "--image-size", "16", "--batch-size", "6", "--max-steps", "6", "--log-every", "1", "--no-probe",
           "--no-progress", "--checkpoint-every", "2", "--keep-checkpoints", "3", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_torchrun_cli_two_processes(npz_gray, tmp_path, capsys):
    """The documented launch: torchrun + the CLI, gloo on CPU; rank 0 alone writes the run folder. Each process
    draws its own augmentations, saves its own random state, and a resume continues every stream exactly; a
    resume with another process count is refused."""
    import json
    import shutil

    from vissl_lite import runs
    from vissl_lite.cli import main

    out = tmp_path / "run"
    proc = _torchrun(npz_gray, out)
    assert "x2" in proc.stdout and proc.stdout.count("vissl-lite pretrain:") == 1  # rank 0 alone prints
    assert "each of the 2 processes normalises BatchNorm over its own batch of 6" in proc.stdout  # gloo: no SyncBN
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # one writer: no duplicated lines
    ckpt = runs.load_checkpoint(out)
    assert ckpt["step"] == 6 and ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])  # not the same crops
    train = json.loads((out / "metrics.json").read_text())["train"]
    assert train["processes"] == 2 and train["global_batch"] == 12
    # resume from the step-4 snapshot: both ranks pick up their own streams, so step 6 is the uninterrupted one
    again = tmp_path / "again"
    shutil.copytree(out, again)
    shutil.copy(again / "checkpoint-00000004.pt", again / "checkpoint.pt")
    _torchrun(npz_gray, again, "--resume")
    resumed, straight = runs.load_checkpoint(again)["model"], ckpt["model"]
    assert all(torch.equal(v, resumed[k]) for k, v in straight.items())
    shutil.copy(out / "checkpoint-00000004.pt", again / "checkpoint.pt")
    assert main(["pretrain", "--out", str(again), "--resume", "--no-progress"]) == 2  # one process now
    err = capsys.readouterr().err
    assert "was trained by 2 processes (global batch 2 x 6) and this is 1" in err
    assert "'torchrun --nproc_per_node=2 -m vissl_lite.cli pretrain --out" in err


def test_evaluation_commands_refuse_torchrun(npz_gray, monkeypatch, capsys):
    from vissl_lite.cli import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["transfer", "--data", str(npz_gray), "--checkpoint", "nowhere"]) == 2
    assert "'transfer' runs in one process; under torchrun only 'pretrain' is distributed" in capsys.readouterr().err


def test_the_resume_command_of_a_multi_node_run_keeps_its_nodes(monkeypatch):
    from vissl_lite.train import _resume_command

    monkeypatch.setattr(dist, "world_size", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 2 nodes of 4 processes
    said = _resume_command("runs/x")
    assert "--nnodes=2 --nproc_per_node=4" in said and "on each of the 2 nodes (8 processes in all)" in said
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # one node
    assert _resume_command("runs/x").startswith("'torchrun --nproc_per_node=8 -m vissl_lite.cli pretrain")
    monkeypatch.setattr(dist, "world_size", lambda: 1)  # a 2-process run's checkpoint, resumed by one process
    assert "as many nodes and processes per node as it had" in _resume_command("runs/x", 2)
