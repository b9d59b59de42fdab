"""``vissl-lite transfer``: self-supervised pretraining on unlabeled images, then every evaluation protocol on a
labeled downstream set at several label fractions and seeds, each against random initialisation (and against a
supplied weights file), in one command and one report.

Folder layout (each step keeps its own metrics.json and report.md, so nothing is recomputed on ``--resume``)::

    <out>/pretrain/      the SSL run (skipped with --checkpoint)
    <out>/frozen/        linear probe and kNN on frozen features: SSL, random init[, weights]
    <out>/finetune/      fine-tuning: SSL, [weights,] scratch
    <out>/report.md      the MedMNIST-style table (ACC and AUC per setting, mean ± std), label-efficiency plots
    <out>/metrics.json   everything above, merged
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from vissl_lite import runs
from vissl_lite.backbones import in_chans_of
from vissl_lite.config import (
    FIELDS,
    RUN_ONLY,
    ConfigError,
    atomic_write_text,
    config_from_dict,
    label_choice,
    make_config,
    parse_value,
)
from vissl_lite.data import data_name
from vissl_lite.data.datasets import absolute_spec, data_signature
from vissl_lite.eval.probe import load_eval_splits, run_evaluations, write_metrics
from vissl_lite.eval.transfer_report import compare, transfer_summary, write_transfer_report

PROTOCOLS = ("linear_probe", "knn", "finetune")
# Settings that shape the evaluations; everything else configures pretraining.
EVAL_KEYS = ("label_fraction", "labels_per_class", "seeds", "knn_k", "knn_temperature", "probe_epochs", "probe_lrs",
             "probe_batch_size", "seed", "device", "progress", "on_bad_file", "window", "val_fraction", "data_mode",
             "memory_limit_gb")
# How a step runs, not what it computes: free to change on --resume.
RUN_KEYS = RUN_ONLY + ("memory_limit_gb",)
SETTINGS = "transfer_settings.json"  # what --resume compares before it reuses any finished step
# Settings only fine-tuning reads: free to change on --resume until finetune/ is finished (its finished sub-runs
# check their own config); and the paths of files that may move.
FINETUNE_ONLY = ("finetune_args",)
MOVABLE = ("checkpoint", "init_weights")  # (their fingerprints say whether the contents changed)
DEFAULTS = {"label_fraction": [0.01, 0.1, 1.0], "seeds": 3, "knn_k": [20]}


def transfer(data: str, pretrain_data: str | None = None, checkpoint: str | Path | None = None,
             out: str | Path | None = None, recipe: str | None = None, finetune_args: dict | None = None,
             protocols: tuple[str, ...] = PROTOCOLS, resume: bool = False, **overrides) -> dict:
    """Pretrain (or take ``checkpoint``), then evaluate on ``data``; the Python twin of ``vissl-lite transfer``.

    Args:
        data: the labeled downstream dataset (any --data spec).
        pretrain_data: unlabeled images for SSL (default: ``data``'s train split, labels unused).
        checkpoint: an existing pretraining run to evaluate instead of pretraining.
        out: output folder (default ``runs/transfer-<data>-<time>``).
        recipe: pretraining recipe (default ``<method>_quickstart``).
        finetune_args: overrides of the fine-tuning recipe (e.g. ``{"epochs": 20}``).
        protocols: any of linear_probe, knn, finetune.
        resume: finish an interrupted transfer in ``out``: finished steps are reused, pretraining resumes from its
            checkpoint, fine-tuning reuses its finished sub-runs.
        **overrides: config keys. Evaluation keys (label_fraction, seeds, knn_k, probe_*, seed, device,
            progress, window, ...) apply to every step; the rest configure pretraining. ``init_weights`` (a local
            timm file) starts pretraining from those weights and adds them as a third initialisation.

    Returns:
        the merged metrics written to ``<out>/metrics.json``.
    """
    t0 = time.time()
    bad = sorted(set(protocols) - set(PROTOCOLS))
    if bad or not protocols:
        raise ConfigError(f"unknown protocol(s) {bad or protocols}; valid: {', '.join(PROTOCOLS)}")
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}")
    for key, value in DEFAULTS.items():
        if not (key == "label_fraction" and overrides.get("labels_per_class")):  # the other way to choose
            overrides.setdefault(key, value)
    # everything that can be checked before hours of pretraining is checked here
    from vissl_lite.data.datasets import has_labels, parse_spec, single_class

    if not has_labels(data):
        raise ConfigError(f"--data {data} has no labels, and transfer evaluates on it; give labeled data as --data "
                          "(a folder with its images directly in two or more class subfolders, a labels CSV, an npz "
                          "with train_labels) and unlabeled images as --pretrain-data")
    if (one := single_class(data)) is not None:
        raise ConfigError(f"--data {data} has one class{f' ({one!r})' if one else ''} in its train split, so there "
                          "is nothing to classify; transfer evaluates on --data: give data with at least 2 classes")
    if pretrain_data:
        parse_spec(pretrain_data, "--pretrain-data")
    # keys and value types only: the recipe they complete (the checkpoint's architecture, a medical preset's
    # augmentation) is known after pretraining
    fixed = sorted(set(finetune_args or {}) & {"data", "out", "resume", "init_weights", "val_fraction"})
    if fixed:
        raise ConfigError(f"--finetune-args: {', '.join(fixed)} cannot be set for fine-tuning alone; give "
                          f"{', '.join('--' + k.replace('_', '-') for k in fixed)} to transfer itself")
    for key, value in (finetune_args or {}).items():
        try:
            value = parse_value(key, value)
        except ConfigError as e:
            raise ConfigError(f"--finetune-args: {e}") from e
        if key == "method" and value != "classifier":
            raise ConfigError(f"--finetune-args: fine-tuning trains the 'classifier' method, not '{value}'")
    from vissl_lite.eval.finetune import ARCH_KEYS

    inherited = [k for k in finetune_args or {} if k in ARCH_KEYS + ("window",)]
    if inherited:  # found here, not after hours of pretraining and probes
        flags = ", ".join("--" + k.replace("_", "-") for k in inherited)
        raise ConfigError(f"--finetune-args: {', '.join(inherited)} cannot be set for fine-tuning alone: fine-tuning "
                          "keeps the pretrained backbone's architecture and input, and maps the data as pretraining "
                          "did. " + (f"--checkpoint {checkpoint} fixes them; leave them out" if checkpoint is not None
                                     else f"Give {flags} to transfer itself, which pretrains with them"))
    if checkpoint is not None:
        ignored = sorted(set(overrides) - set(EVAL_KEYS) - {"init_weights"})
        if ignored or recipe:
            given = ", ".join(["--config"] * bool(recipe) + ["--" + k.replace("_", "-") for k in ignored])
            raise ConfigError(f"{given}: pretraining settings, and --checkpoint {checkpoint} is already pretrained "
                              "(its own settings are used). Leave them out (fine-tuning settings go in "
                              "--finetune-args, e.g. 'lr=1e-3'), or drop --checkpoint to pretrain with them")
    init_weights = overrides.get("init_weights") or None
    if init_weights and not Path(init_weights).expanduser().is_file():
        raise ConfigError(f"--init-weights: no file at {init_weights}; give a local timm weights file "
                          "(.safetensors or .pth)")
    eval_over = {k: parse_value(k, overrides[k]) for k in EVAL_KEYS if k in overrides}
    out = Path(out or Path("runs") / f"transfer-{data_name(data)}-{time.strftime('%Y%m%d-%H%M%S')}").expanduser()
    if resume and not out.is_dir():
        raise FileNotFoundError(f"--resume: no transfer folder {out}; --out names the transfer to finish (leave "
                                "--resume out to start one)")
    runs.check_out_folder(out, "transfer")
    if (out / "metrics.json").is_file() and not resume:
        raise FileExistsError(f"{out} already holds a transfer result; pass --resume to reuse its steps, or choose "
                              "another --out")
    if not resume and ((out / SETTINGS).is_file() or (out / "pretrain" / runs.CHECKPOINT).is_file()):
        raise FileExistsError(f"{out} holds an unfinished transfer; pass --resume to finish it, or choose another "
                              "--out")
    settings = _settings(data, pretrain_data, checkpoint, recipe, overrides, finetune_args, protocols)
    if resume:
        _check_settings(out, settings, ignore=("checkpoint_step", "checkpoint_fingerprint"))  # (known later)

    reused = []  # work done by an earlier invocation, whole steps or parts: its time is not in this one's
    # ---- 1. self-supervised pretraining (in-domain, unlabeled)
    if checkpoint is None:
        run = out / "pretrain"
        pre = overrides | {"data": pretrain_data or data, "out": str(run), "probe": False}
        if (run / "metrics.json").is_file():
            print(f"vissl-lite transfer: pretraining already done in {run}")
            reused.append("pretrain")
        else:
            cfg = make_config(recipe, **pre | {"resume": (run / "checkpoint.pt").is_file()})
            from vissl_lite.pretraining import pretrain
            from vissl_lite.train import TrainingInterrupted

            try:
                resumed = pretrain(cfg)["train"].get("resumed") or []
                if resumed:
                    reused.append(f"pretrain up to step {resumed[-1]['step']}")
            except TrainingInterrupted as e:  # its advice ('vissl-lite pretrain --resume') would stop there
                raise TrainingInterrupted(f"{str(e).split('; continue with')[0]}; run the same 'vissl-lite "
                                          "transfer' command with --resume to finish pretraining and then "
                                          "evaluate", e.signum) from None
        checkpoint = run
    elif pretrain_data:
        raise ConfigError("give --checkpoint (an existing run) or --pretrain-data (to pretrain), not both")
    ckpt_file = runs.find_checkpoint(checkpoint)
    saved = runs.load_checkpoint(ckpt_file)  # read once: the file holds the optimizer state too
    pre_cfg = saved["config"]
    runs.check_split_fraction(checkpoint, pre_cfg, data, eval_over.get("val_fraction"))
    runs.check_split_rule(checkpoint, saved, data)
    if "pretrain" in reused:  # also where no settings file says what it was trained with
        _check_pretraining(checkpoint, pre_cfg, settings["pretraining"])
    if "window" in eval_over:  # every step maps the data as pretraining did: one window per report
        runs.check_window(checkpoint, saved, eval_over["window"], "its probes and fine-tuning map",
                          "pretrain again with the window you want")
    # a --checkpoint run trained further, or replaced by another at the same path, is another starting point
    settings |= {"checkpoint_step": saved["step"], "checkpoint_fingerprint": runs.state_fingerprint(saved["model"])}
    if resume:
        _check_settings(out, settings)
    out.mkdir(parents=True, exist_ok=True)  # only now: a bad --checkpoint or pretraining input leaves no folder
    atomic_write_text(out / SETTINGS, json.dumps(settings, indent=2))

    # ---- 2. frozen features: linear probe and kNN
    steps: dict[str, dict] = {}
    frozen = tuple(p for p in protocols if p != "finetune")
    if frozen:
        if resume and (out / "frozen" / "metrics.json").is_file():
            reused.append("frozen")
        steps["frozen"] = _frozen(ckpt_file, data, eval_over, frozen, out / "frozen", init_weights, resume)

    # ---- 3. fine-tuning
    if "finetune" in protocols:
        from vissl_lite.eval.finetune import finetune

        ft_dir = out / "finetune"
        if resume and (ft_dir / "metrics.json").is_file():
            steps["finetune"] = _load(ft_dir)
            reused.append("finetune")
        else:
            # (a medical preset of the pretraining run carries over: finetune_config)
            ft_over = {k: v for k, v in eval_over.items() if k != "window"} | dict(finetune_args or {})
            steps["finetune"] = finetune(ckpt_file, init="checkpoint", init_weights=init_weights, out=ft_dir,
                                         data=data, resume=resume, **ft_over)
            if n := steps["finetune"]["timing"].get("reused_runs"):
                reused.append(f"finetune ({n} of {steps['finetune']['timing']['runs']} runs)")

    rows = sorted((r for s in steps.values() for r in s["eval"]["table"]), key=_row_order)
    metrics = {"command": "transfer", "data": absolute_spec(data),
               "pretrain_data": absolute_spec(pretrain_data or data),
               "checkpoint": str(ckpt_file.resolve()), "checkpoint_step": saved["step"],
               "init_weights": settings.get("init_weights"),
               "protocols": list(protocols), "finetune_args": settings["finetune_args"],
               "protocol_texts": _protocol_texts(steps), "config": pre_cfg,
               "window": saved.get("window") or pre_cfg.get("window", "auto"),
               "environment": runs.environment(),
               "eval": {"table": rows, "comparison": compare(rows)},
               "steps": {k: str(out / k) for k in steps},
               "timing": {"total_s": round(time.time() - t0, 1), "reused_steps": reused}}
    write_metrics(out, metrics)
    report = write_transfer_report(out, metrics)
    print(transfer_summary(metrics))
    print(f"  report: {report}")
    return metrics


def _protocol_texts(steps: dict[str, dict]) -> dict[str, str]:
    """How each protocol ran (epochs, learning rates, k, fine-tuning schedule), from its step's metrics."""
    texts = {}
    for step in steps.values():
        for name in PROTOCOLS:
            entry = step["eval"].get(name)
            if isinstance(entry, dict) and entry.get("protocol"):
                texts[name] = entry["protocol"]
    return texts


def _settings(data: str, pretrain_data: str | None, checkpoint, recipe: str | None, overrides: dict,
              finetune_args: dict | None, protocols: tuple[str, ...]) -> dict:
    """Everything that decides what a transfer computes, in one spelling (absolute paths, parsed values), as
    JSON stores it: what --resume compares before reusing a finished step. Data comes with a signature of its
    files (sizes, modification times) and weights with a hash, so either rewritten in place counts as changed."""
    values = {k: parse_value(k, overrides[k]) for k in EVAL_KEYS if k in overrides and k not in RUN_KEYS}
    if overrides.get("init_weights"):
        values["init_weights"] = os.path.abspath(Path(overrides["init_weights"]).expanduser())
        values["init_weights_fingerprint"] = _file_hash(Path(values["init_weights"]))
    # one flat mapping: config keys beside the command's own arguments (no config key is named like those)
    signature = data_signature(data)
    settings = values | {"data": absolute_spec(data), "data_signature": signature,
                         "protocols": sorted(protocols),
                         "finetune_args": {k: parse_value(k, v) for k, v in (finetune_args or {}).items()}}
    if checkpoint is not None:
        settings["checkpoint"] = str(runs.find_checkpoint(checkpoint).resolve())
    else:
        # pretraining as it resolves (recipe, then flags): '--method simclr' given or not is the same run
        pre = make_config(recipe, **overrides | {"data": pretrain_data or data})
        settings |= {"pretrain_data_signature": data_signature(pretrain_data) if pretrain_data else signature,
                     "pretraining": _pretraining_keys(pre.to_dict())}
    return json.loads(json.dumps(settings, default=str))


def _pretraining_keys(config: dict) -> dict:
    """What makes a pretraining run what it is and how long it trained (pretrain's own resume keys), the data
    path absolute. The --init-weights file is compared by its contents, beside these."""
    from vissl_lite.pretraining import IDENTITY_KEYS, SCHEDULE_KEYS

    keys = {k: config.get(k) for k in IDENTITY_KEYS + SCHEDULE_KEYS}
    keys["data"] = absolute_spec(keys["data"])
    return json.loads(json.dumps(keys, default=str))


def _check_pretraining(run: Path, saved_config: dict, now: dict) -> None:
    """A ConfigError when the finished pretraining in ``run`` (its checkpoint's config: ``saved_config``), about to
    be reused, was trained with other settings than the command asks for (``now``)."""
    then = _pretraining_keys(saved_config)
    differ = sorted(k for k in now if now[k] != then.get(k) and k in then)
    if differ:
        detail = "; ".join(_difference(k, then.get(k), now.get(k)) for k in differ[:4])
        raise ConfigError(f"--resume: the finished pretraining in {run} was trained with other settings ({detail}), "
                          "and would be reused as if it were this one. Resume with the same pretraining settings, or "
                          "choose another --out")


def _file_hash(path: Path) -> str:
    """A short hash of a file's bytes: equal for a moved or copied file, different for another one."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _evaluated(out: Path) -> list[str]:
    """The evaluation steps in ``out`` with results on disk: finished ones, and fine-tuning's finished sub-runs."""
    found = ["frozen"] if (out / "frozen" / "metrics.json").is_file() else []
    if (out / "finetune" / "metrics.json").is_file() or any((out / "finetune").glob("*/*/*/result.json")):
        found.append("finetune")
    return found


def _check_settings(out: Path, now: dict, ignore: tuple[str, ...] = ()) -> None:
    """A ConfigError when the transfer in ``out`` was started with other settings than ``now`` (or other data,
    weights or checkpoint contents): its finished steps would be reused and labelled with the new ones.
    Fine-tuning's own settings may change while it is unfinished; a checkpoint may move. A settings file that is
    missing or unreadable while evaluation results exist is refused: nothing would say what they were made with."""
    path = out / SETTINGS
    evaluated = _evaluated(out)
    try:
        then = json.loads(path.read_text())
    except FileNotFoundError:
        if not evaluated:
            return  # interrupted during pretraining, which checks its own resume
        then = None
    except (OSError, ValueError):
        then = None
    if not isinstance(then, dict):
        raise ConfigError(f"--resume: {path} is {'missing' if not path.exists() else 'unreadable'}, so nothing says "
                          f"which settings made the results in {', '.join(str(out / s) for s in evaluated)}. "
                          "Choose another --out, or delete those folders to compute them again"
                          + _keep_pretraining(out, []))
    if not (out / "finetune" / "metrics.json").is_file():
        ignore += FINETUNE_ONLY
    differ = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k) and k not in ignore + MOVABLE
                    and not (k.endswith(("_signature", "_fingerprint")) and k not in then))  # (older files)
    if differ:
        detail = "; ".join(_difference(k, then.get(k), now.get(k)) for k in differ[:4])
        raise ConfigError(f"--resume: {out} was started with other settings ({detail}), and its finished steps "
                          "would be reported under the new ones. Resume with the same command and inputs, or choose "
                          "another --out" + _keep_pretraining(out, differ))


def _difference(key: str, then, now) -> str:
    if key == "checkpoint_step":
        return f"the checkpoint was at step {then} then, {now} now"
    if key.endswith(("_signature", "_fingerprint")):
        what = {"checkpoint_fingerprint": "the checkpoint's weights", "init_weights_fingerprint": "the --init-weights "
                "file's contents", "data_signature": "the --data files (sizes or modification times)",
                "pretrain_data_signature": "the pretraining data files (sizes or modification times)"}
        return f"{what.get(key, key)} changed since"
    if key == "pretraining" and isinstance(then, dict) and isinstance(now, dict):
        differ = [k for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)]
        return "; ".join([_difference(k, then.get(k), now.get(k)) for k in differ[:4]]
                         + [f"{len(differ) - 4} more pretraining setting(s)"] * (len(differ) > 4))
    return f"{key}: {_given(then)} then, {_given(now)} now"


def _given(value) -> str:
    return "(not given)" if value is None else repr(value)


def _keep_pretraining(out: Path, differ: list[str]) -> str:
    """How to reuse ``out``'s finished pretraining when only evaluation settings (``differ``) changed."""
    run = out / "pretrain"
    evaluation = set(EVAL_KEYS) | {"data", "data_signature", "protocols", "finetune_args"}
    if not (run / "metrics.json").is_file() or not set(differ) <= evaluation:
        return ""
    return (f" (to evaluate its finished pretraining with the new settings: --checkpoint {run} --out NEW, without "
            "the pretraining flags)")


def _row_order(row: dict) -> tuple:
    """Protocols as in PROTOCOLS (kNN k in order), SSL before supplied weights before random, fewer labels first."""
    base, _, k = row["protocol"].partition(" k=")
    rank = {"ssl": 0, "checkpoint": 0, "weights": 1, "random_init": 2, "scratch": 2}
    return (PROTOCOLS.index(base) if base in PROTOCOLS else 9, int(k or 0), rank.get(row["init"], 3),
            row["n_train"])


def _load(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def _frozen(ckpt_file: Path, data: str, eval_over: dict, which: tuple[str, ...], out: Path,
            init_weights: str | None, resume: bool) -> dict:
    """Linear probe and/or kNN of the SSL, random-init (and supplied-weights) backbones; report.md in ``out``."""
    if resume and (out / "metrics.json").is_file():
        return _load(out)
    dev = runs.resolve_device(eval_over.get("device", "auto"))
    cfg, model, ckpt = runs.load_run(ckpt_file, dev)
    keep = {k: v for k, v in eval_over.items() if k not in ("device", "window")}  # the run's window (resolved)
    cfg = config_from_dict(cfg.to_dict() | keep | label_choice(keep) | {"data": data})
    t0 = time.time()
    splits = load_eval_splits(cfg, in_chans_of(model.backbone))
    print(f"vissl-lite transfer: {' and '.join(which)} on frozen features of {splits['train'].name} "
          f"({len(splits['train'])} train images), {cfg.seeds} seed(s)")
    features: dict = {}
    results = run_evaluations(model, cfg, dev, baseline=True, splits=splits, which=which, features=features,
                              weights_file=init_weights)
    metrics = {"command": "transfer (frozen features)",  # not 'linear-probe': that command must not write here
               "checkpoint": str(ckpt_file), "step": ckpt["step"], "config": cfg.to_dict(),
               "environment": runs.environment(), "eval": results, "class_names": splits["train"].class_names,
               "timing": {"total_s": round(time.time() - t0, 2)}}
    write_metrics(out, metrics)
    from vissl_lite.eval.probe import summary
    from vissl_lite.eval.report import write_report

    write_report(out, metrics, features, train_curves=ckpt_file.parent / "train_curves.png")
    print(summary(metrics))
    return metrics
