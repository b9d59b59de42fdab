"""The training loop: one plain loop for pretraining and fine-tuning.

Per step: uint8 batch already on the device -> augment (no grad) -> method forward under autocast -> backward,
clip, step. The learning rate is a pure function of the step. The only device->host sync is at log steps, where a
device-side flag also tells whether any loss since the last check was NaN/inf; a bad loss stops the run before
the next checkpoint would be written, so the last checkpoint on disk is always a good one. SIGTERM/SIGINT stop it
at a step boundary with a checkpoint. What a pretraining run sets up around the loop is in
:mod:`vissl_lite.pretraining`; fine-tuning's is in :mod:`vissl_lite.eval.finetune`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import timm.optim
import torch
from torch import nn
from tqdm.auto import tqdm

from vissl_lite import dist, runs
from vissl_lite.config import RunConfig


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or SIGINT stopped training at a step boundary (after writing a checkpoint when the run keeps one)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def _stop_requests():
    """Turn SIGTERM/SIGINT into a flag the loop checks after each step, so a kill from a scheduler or Ctrl-C ends
    on a step boundary with a checkpoint instead of mid-write. Off the main thread, signals cannot be caught and
    the flag stays down."""
    flag = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request(signum, frame):
        if flag["signum"] is not None:  # a second signal: stop now (run_loop says what is on disk)
            flag["second"] = signum
            raise KeyboardInterrupt
        flag["signum"] = signum

    previous = {s: signal.signal(s, request) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup from 0 to ``base_lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at
    ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def optimizer_kwargs(model: nn.Module, cfg: RunConfig) -> dict:
    """Constructor arguments beyond lr and weight decay: momentum for SGD and LARS; for Adam and AdamW on CPU or
    CUDA, torch's fused kernel. The default on CPU is a Python loop of elementwise ops per tensor: 36 ms per step
    for ResNet-18's 11M parameters on 2 cores against 9 ms fused (channels-last), 13% of a quickstart-model step in
    the end-to-end benchmark. Build the optimizer after moving the model to its device."""
    if cfg.optimizer in ("sgd", "lars"):
        return {"momentum": 0.9}
    if cfg.optimizer in ("adam", "adamw") and next(model.parameters()).device.type in ("cpu", "cuda"):
        return {"fused": True}
    return {}


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """timm's factory: biases and norm parameters get no weight decay (and no LARS adaptation)."""
    return timm.optim.create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                          **optimizer_kwargs(model, cfg))


def _autocast_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if cfg.amp == "fp16" else torch.bfloat16


class StepSchedule:
    """:func:`lr_at` applied to every parameter group (times its ``lr_scale``, as timm's schedulers do), with the
    ``step_update(step)`` interface of timm's schedulers so the loop drives both alike."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int, cfg: RunConfig):
        self.optimizer, self.total, self.warmup, self.lr, self.min_lr = optimizer, total, warmup, cfg.lr, cfg.min_lr

    def step_update(self, num_updates: int) -> None:
        lr = lr_at(num_updates, self.total, self.warmup, self.lr, self.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def run_loop(train_model: nn.Module, model: nn.Module, loader, aug: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler, cfg: RunConfig, step: int, total: int, steps_per_epoch: int, out: Path,
             hooks: list = (), desc: str = "train", checkpoint: bool = True, scaler_state: dict | None = None,
             meta: dict | None = None) -> int:
    """The one training loop (pretraining and fine-tuning): from ``step`` to ``total``, logging to
    ``<out>/metrics.jsonl`` and (``checkpoint``) saving ``<out>/checkpoint.pt`` every ``cfg.checkpoint_every`` steps
    and at the end.

    Args:
        train_model: what the forward runs (the DDP wrapper when distributed); ``model`` is what gets saved.
        scheduler: anything with ``step_update(step)`` that sets the optimizer's learning rates (timm's schedulers,
            :class:`StepSchedule`).
        hooks: ``hook(step, is_last) -> dict | None`` after each step; a returned dict is logged with the step.
        scaler_state: the fp16 loss scaler's state from the checkpoint being resumed.
        meta: extra checkpoint entries, saved with every checkpoint (pretraining: the resolved ``--window
            dataset`` range, the resume history, and ``train_seconds``, the time of earlier segments, which is
            saved as the training time up to that step).

    Returns:
        the step reached.
    """
    main = dist.is_main()
    device = next(model.parameters()).device
    amp_dtype = _autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if scaler_state and scaler.is_enabled():
        scaler.load_state_dict(scaler_state)
    if cfg.compile:
        # in place: __call__ is compiled, the parameters and state-dict keys stay the model's own, so
        # checkpoints, resume and export do not change; the first step compiles. Evaluation goes through
        # model.embed / model.logits, which stay eager
        train_model.compile()
        if main:
            print(f"  {desc}: --compile on; the first step compiles the model and takes longer")
    log_path = out / "metrics.jsonl"
    model.train()
    bad_loss = torch.zeros((), dtype=torch.bool, device=device)
    channels_last = runs.use_channels_last(model)
    bar = tqdm(total=total, initial=step, desc=desc, disable=not (cfg.progress and main), dynamic_ncols=True,
               leave=desc == "pretrain")
    t_log, seen, last_good = time.time(), 0, step
    sums: dict[str, torch.Tensor] = {}  # each output summed on the device since the last log line
    n_summed = 0
    t_loop, before = t_log, (meta or {}).get("train_seconds", 0.0)

    def saved_meta() -> dict | None:
        return None if meta is None else meta | {"train_seconds": round(before + time.time() - t_loop, 1)}

    epoch = step // steps_per_epoch
    stop: dict = {}
    try:
        with _stop_requests() as stop, runs.keep_freed_memory(device):
            while step < total:
                loader.set_epoch(epoch, start=step - epoch * steps_per_epoch)
                for x, y in loader:
                    scheduler.step_update(step)
                    lr = max(group["lr"] for group in optimizer.param_groups)
                    views = aug(x)  # list of (B, C, S, S) float
                    if channels_last:
                        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        outputs = train_model(views, y)
                    loss = outputs["loss"]
                    bad_loss |= ~torch.isfinite(loss.detach())
                    for k, v in outputs.items():  # no host sync: read at log steps only
                        v = v.detach().float()
                        sums[k] = sums[k] + v if k in sums else v
                    n_summed += 1
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                        if amp_dtype != torch.float16:  # fp16's scaler skips non-finite steps by design
                            bad_loss |= ~torch.isfinite(grad_norm)  # a NaN gradient would poison the weights
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    seen += x.shape[0] * dist.world_size()
                    bar.update(1)
                    is_last = step >= total
                    if step % cfg.log_every == 0 or is_last:
                        _check_finite(bad_loss, last_good, step, out, checkpoint)
                        now = time.time()
                        record = {"step": step, "epoch": round(step / steps_per_epoch, 3), "lr": lr,
                                  # the mean over the steps since the last line: one batch's value is noise
                                  **{k: round(float(v) / n_summed, 5) for k, v in sums.items()},
                                  "images_per_s": round(seen / max(now - t_log, 1e-9), 1)}
                        t_log, seen, sums, n_summed = now, 0, {}, 0
                        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                        if main:
                            _append(log_path, record)
                    t_hooks = time.time()
                    for hook in hooks:
                        extra = hook(step, is_last)
                        if extra and main:
                            _append(log_path, {"step": step, "epoch": round(step / steps_per_epoch, 3), **extra})
                    t_log += time.time() - t_hooks  # a monitor's time is not training throughput
                    if checkpoint and (step % cfg.checkpoint_every == 0 or is_last):
                        bad_loss |= _nonfinite_weights(model)  # an update can overflow with a finite loss
                        _check_finite(bad_loss, last_good, step, out, checkpoint)
                        rngs = runs.rng_states_of_every_rank()  # every rank, before rank 0 saves
                        if main:
                            runs.save_checkpoint(out / runs.CHECKPOINT, model, optimizer, step, cfg,
                                                 cfg.keep_checkpoints, scaler, saved_meta(), rngs)
                        last_good = step
                    if _stop_requested(stop, step, cfg.log_every):
                        _stop(stop["signum"], step, last_good, checkpoint, main, model, optimizer, cfg, out, bad_loss,
                              scaler, saved_meta())
                    if is_last:
                        break
                epoch += 1
            _check_finite(bad_loss, last_good, step, out, checkpoint)
            if stop["signum"] is not None:  # arrived during the last step: training is done and saved; stop here
                _stop(stop["signum"], step, last_good, checkpoint, main, model, optimizer, cfg, out, bad_loss, scaler,
                      saved_meta())
    except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM) mid-step: no checkpoint now; say what there is
        signum = stop.get("second")
        if not signum:  # not raised by our handler (e.g. an interrupt off the main thread's handler)
            raise
        name = signal.Signals(signum).name
        if not checkpoint:
            raise TrainingInterrupted(f"second {name} at step {step}: stopped at once", signum) from None
        saved = (f"{out / runs.CHECKPOINT} holds step {last_good}; continue with {_resume_command(out)}"
                 if (out / runs.CHECKPOINT).is_file() else "no checkpoint had been written yet")
        raise TrainingInterrupted(f"second {name} at step {step}: stopped at once without saving; {saved}",
                                  signum) from None
    bar.close()
    return step


def _stop_requested(stop: dict, step: int, log_every: int) -> bool:
    """Whether to stop after this step. Across processes the ranks agree (MAX over their flags) at log steps, so
    every rank stops on the same step instead of one waiting forever in the next all-reduce."""
    if not dist.is_distributed():
        return stop["signum"] is not None
    if step % log_every:
        return False
    import torch.distributed as tdist

    device = torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([stop["signum"] or 0], device=device)
    tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
    stop["signum"] = int(flag.item()) or None
    return stop["signum"] is not None


def _append(log_path: Path, record: dict) -> None:
    with open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _stop(signum: int, step: int, last_good: int, checkpoint: bool, main: bool, model, optimizer, cfg: RunConfig,
          out: Path, bad_loss: torch.Tensor, scaler: torch.amp.GradScaler, meta=None) -> None:
    name = signal.Signals(signum).name
    if not checkpoint:
        raise TrainingInterrupted(f"{name} at step {step}: stopped; this run keeps no checkpoint of its own",
                                  signum)
    if checkpoint:
        bad_loss |= _nonfinite_weights(model)
    _check_finite(bad_loss, last_good, step, out, checkpoint)
    if last_good != step:
        rngs = runs.rng_states_of_every_rank()  # every rank takes part
        if main:
            runs.save_checkpoint(out / runs.CHECKPOINT, model, optimizer, step, cfg, cfg.keep_checkpoints, scaler,
                                 meta, rngs)
    raise TrainingInterrupted(f"{name} at step {step}: wrote {out / runs.CHECKPOINT}; continue with "
                              + _resume_command(out), signum)


def _resume_command(out: Path, processes: int | None = None) -> str:
    """How to continue the run in ``out``: the same launch, torchrun with the same process count when it had
    several (on several nodes, torchrun's LOCAL_WORLD_SIZE gives the processes per node)."""
    n = dist.world_size() if processes is None else processes
    command = f"vissl-lite pretrain --out {out} --resume"
    if n == 1:
        return f"'{command}'"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", n)) if n == dist.world_size() else n
    if 0 < local < n and n % local == 0:  # this launch spans n / local nodes
        return (f"'torchrun --nnodes={n // local} --nproc_per_node={local} <your rendezvous options> -m "
                f"vissl_lite.cli pretrain --out {out} --resume' on each of the {n // local} nodes ({n} processes in "
                "all)")
    more = "" if processes is None else "; on several nodes, as many nodes and processes per node as it had"
    return (f"'torchrun --nproc_per_node={n} -m vissl_lite.cli pretrain --out {out} --resume' ({n} processes in "
            f"all{more})")


def _nonfinite_weights(model: nn.Module) -> torch.Tensor:
    """Whether any floating-point weight or buffer (BatchNorm statistics) of ``model`` is NaN or infinite: checked
    before every checkpoint, so that a checkpoint on disk is always one a resume can train from."""
    tensors = [t.detach() for t in model.state_dict().values() if t.is_floating_point()]
    return ~torch.stack([torch.isfinite(t).all() for t in tensors]).all() if tensors else torch.tensor(False)


def _check_finite(bad_loss: torch.Tensor, last_good: int, step: int, out: Path, checkpoint: bool = True) -> None:
    if bool(bad_loss):  # host sync, only at log/checkpoint steps
        where = f"the last good checkpoint is {out / runs.CHECKPOINT} (step {last_good})" if last_good else \
            "no checkpoint was written yet"
        if not checkpoint:
            where = "nothing was saved from this run"
        raise NonFiniteLossError(
            f"the loss, its gradient or the weights became NaN or infinite between steps {last_good} and {step}; "
            "stopped, "
            f"{where}. "
            "Try a lower --lr, --clip-grad 1.0, a longer --warmup-epochs, or --amp off.")


def plot_curves(log_path: Path, png: Path) -> None:
    """Loss, learning rate and any other logged scalar against the step, one panel each."""
    if not log_path.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    keys = ["loss", "lr"]
    for r in records:  # method scalars and monitor lines (e.g. knn_top1) may appear on some lines only
        keys += [k for k in r if k not in keys and k not in ("step", "epoch", "images_per_s")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points), marker="o" if len(points) < 30 else None)
        ax.set_title(key + (" (val, %)" if key == "knn_top1" else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
