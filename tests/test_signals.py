"""Runs killed from outside: SIGTERM/SIGINT stop on a step boundary with a checkpoint; SIGKILL at a random step
loses nothing that --resume cannot redo exactly. Each case runs the real CLI in a child process."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from vissl_lite import runs
from vissl_lite.config import make_config
from vissl_lite.pretraining import pretrain

# test_resnet: timm's tiny ResNet, so a checkpoint every 2 steps costs little
ARGS = ["--backbone", "test_resnet", "--image-size", "16", "--batch-size", "12", "--epochs", "20", "--log-every", "1",
        "--checkpoint-every", "2", "--no-probe", "--no-progress", "--warmup-epochs", "1"]


def _start(npz, out, *extra):
    cmd = [sys.executable, "-m", "vissl_lite.cli", "pretrain", "--data", str(npz), "--out", str(out), *ARGS, *extra]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_step(proc, log, step, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        if log.is_file():
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            if lines and lines[-1]["step"] >= step:
                return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("run did not reach the step in time")


def _straight(npz, out):
    cfg = make_config(data=str(npz), out=str(out), backbone="test_resnet", image_size=16, batch_size=12, epochs=20,
                      log_every=1,
                      checkpoint_every=2, probe=False, progress=False, warmup_epochs=1)
    pretrain(cfg)
    return runs.load_checkpoint(out)["model"], cfg


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_write_a_checkpoint_and_resume_exactly(npz_gray, tmp_path, sig):
    torch.set_num_threads(1)  # the child runs on one thread: same arithmetic
    straight, cfg = _straight(npz_gray, tmp_path / "straight")
    run = tmp_path / "killed"
    proc = _start(npz_gray, run)
    _wait_for_step(proc, run / "metrics.jsonl", 5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert f"{signal.Signals(sig).name} at step" in err and "--resume" in err
    saved = runs.load_checkpoint(run)
    assert 5 <= saved["step"] < 60  # stopped early, on the step it reached (not only on a checkpoint_every step)
    pretrain(make_config(**cfg.to_dict() | {"out": str(run), "resume": True}))
    resumed = runs.load_checkpoint(run)["model"]
    assert all(torch.equal(v, resumed[k]) for k, v in straight.items())


def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(npz_gray, tmp_path):
    torch.set_num_threads(1)
    straight, cfg = _straight(npz_gray, tmp_path / "straight")
    run = tmp_path / "killed"
    at = random.Random().randint(3, 55)  # a different step on every run of the suite
    proc = _start(npz_gray, run)
    _wait_for_step(proc, run / "metrics.jsonl", at)
    proc.kill()
    proc.wait()
    assert runs.load_checkpoint(run)["step"] <= 60  # the last complete checkpoint loads (atomic writes)
    (run / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # as a kill during a save leaves it
    pretrain(make_config(**cfg.to_dict() | {"out": str(run), "resume": True}))
    resumed = runs.load_checkpoint(run)["model"]
    assert all(torch.equal(v, resumed[k]) for k, v in straight.items()), f"killed near step {at}"
    assert not list(run.glob(".checkpoint.pt.*.tmp"))  # partial saves are cleared, not kept forever


def test_keep_last_k_checkpoints(npz_gray, tmp_path):
    pretrain(make_config(data=str(npz_gray), out=str(tmp_path / "r"), image_size=16, batch_size=12, max_steps=7,
                         checkpoint_every=2, keep_checkpoints=2, probe=False, progress=False))
    snaps = sorted(p.name for p in (tmp_path / "r").glob("checkpoint-*.pt"))
    assert snaps == ["checkpoint-00000006.pt", "checkpoint-00000007.pt"]
    assert runs.load_checkpoint(tmp_path / "r" / snaps[0])["step"] == 6
    assert runs.load_checkpoint(tmp_path / "r")["step"] == 7


def test_sigterm_to_the_process_group_with_streaming_workers(png_tree, tmp_path):
    """A scheduler signals the whole group: the DataLoader workers must leave the stop to the main process."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vissl_lite.cli", "pretrain", "--data", str(png_tree), "--out", str(run),
           "--data-mode", "stream", "--num-workers", "2", "--backbone", "test_resnet", "--image-size", "16",
           "--batch-size", "4", "--epochs", "50", "--log-every", "1", "--checkpoint-every", "1000", "--no-probe",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    _wait_for_step(proc, run / "metrics.jsonl", 3)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-1500:]
    assert 3 <= runs.load_checkpoint(run)["step"] < 300


def test_resume_drops_a_log_line_cut_short_by_a_kill(tmp_path):
    from vissl_lite.pretraining import _truncate_log

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.9}\n{"step": 3, "lo')
    _truncate_log(log, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]


def test_a_second_ctrl_c_stops_at_once_and_names_the_last_checkpoint(npz_gray, tmp_path, monkeypatch, capsys):
    """The first SIGINT asks for a stop at the step's end; a second one inside the step stops mid-way, unsaved."""
    import vissl_lite.train as train
    from vissl_lite.cli import main

    append = train._append

    def append_then_ctrl_c_twice(path, record):
        append(path, record)
        if record["step"] == 3:  # checkpoint_every 2: step 2 is on disk
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train, "_append", append_then_ctrl_c_twice)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a job started in the background
    run = tmp_path / "r"
    assert main(["pretrain", "--data", str(npz_gray), "--out", str(run), *ARGS]) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "second SIGINT at step 3: stopped at once without saving" in err
    assert f"{run / 'checkpoint.pt'} holds step 2" in err and "--resume" in err
    assert runs.load_checkpoint(run)["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_ctrl_c_during_the_probes_says_training_is_saved(npz_gray, tmp_path, monkeypatch, capsys):
    import vissl_lite.eval.probe as probe
    from vissl_lite.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(probe, "run_evaluations", interrupted)
    run = tmp_path / "r"
    args = ["pretrain", "--data", str(npz_gray), "--out", str(run), "--image-size", "16", "--batch-size", "12",
            "--max-steps", "2", "--no-progress"]
    assert main(args) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "SIGINT during evaluation: training finished" in err and "holds step 2" in err
    assert f"'vissl-lite pretrain --out {run} --resume' (it only runs the probes)" in err
    assert runs.load_checkpoint(run)["step"] == 2
