"""``vissl-lite``: pretrain | linear-probe | knn | finetune | transfer | export | reconstruct.

Every RunConfig field is a ``--kebab-case`` flag; flags override the recipe (``--config``), which overrides the
defaults. Run ``vissl-lite pretrain --help`` for the full list.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

from vissl_lite import __version__
from vissl_lite.config import FIELDS, ConfigError, RunConfig, _base_type, make_config, pretrain_recipes

PROTOCOLS = ("linear_probe", "knn", "finetune")  # vissl_lite.eval.transfer.PROTOCOLS, without importing torch

EPILOG_PRETRAIN = """examples:
  vissl-lite pretrain                                  # quickstart: SimCLR on the built-in shapes, then probes
  vissl-lite pretrain --data ~/images --epochs 200     # your own folder (class subfolders give probe labels)
  vissl-lite pretrain --data medmnist/pneumoniamnist.npz --in-chans 1 --out runs/pneu
  vissl-lite pretrain --out runs/pneu --resume         # continue a run from its last checkpoint
shipped recipes (--config NAME): {recipes}
"""

EPILOG_FINETUNE = """examples:
  vissl-lite finetune --checkpoint runs/pneu                          # SSL init vs scratch, all labels
  vissl-lite finetune --checkpoint runs/pneu --label-fraction 0.01,0.1,1 --seeds 3   # label-efficiency curve
  vissl-lite finetune --init scratch --data medmnist/chestmnist.npz --in-chans 1     # multi-label, AUROC
  vissl-lite finetune --init-weights resnet18.safetensors --data medmnist/retinamnist.npz --image-size 28
"""

EPILOG_TRANSFER = """examples:
  vissl-lite transfer --data medmnist/pneumoniamnist.npz --image-size 28 --augment radiology --epochs 10
  vissl-lite transfer --data labels.csv --pretrain-data ~/unlabeled_films --in-chans 1 --augment radiology
  vissl-lite transfer --data medmnist/retinamnist.npz --checkpoint runs/retina      # evaluate an existing run
  vissl-lite transfer --data retina.npz --init-weights resnet18_imagenet.safetensors  # continued SSL + 3rd init
  vissl-lite transfer --data ... --out runs/t --resume                                # finish an interrupted one
defaults: --label-fraction 0.01,0.1,1 --seeds 3 --knn-k 20; fine-tuning uses the 'finetune' recipe (change it with
--finetune-args 'epochs=20,lr=1e-3') and the pretraining augmentation when that is a medical preset.
"""

# The recipe a plain 'pretrain' (or 'transfer') uses, whose values --help shows as the defaults.
DEFAULT_RECIPE = "simclr_quickstart"
RECIPE_NOTE = (" Defaults shown are the simclr_quickstart recipe's; --method mae or dae takes its own quickstart "
               "recipe, --config another.")
# Pretraining-only settings that fine-tuning does not read.
FINETUNE_UNUSED = ("probe", "knn_every", "probe_epochs", "probe_lrs", "probe_batch_size", "knn_k", "knn_temperature",
                   "keep_checkpoints", "checkpoint_every")

# What `preview` reads: the data, the recipe and what shapes its views
PREVIEW_FLAGS = ("data", "method", "augment", "augment_args", "image_size", "in_chans", "mean", "std", "seed",
                 "window", "val_fraction")

# Flags that mean nothing to the user as overrides of a recipe (they are how a run is located).
_PRETRAIN_ONLY_HELP = {"config": "Recipe: a name shipped with the package or a path to a YAML file "
                                 "(default: <method>_quickstart; with --resume, the run's own config.yaml)."}


def _add_config_flags(parser: argparse.ArgumentParser, recipe: str | None = None, shown: dict | None = None,
                      refused: tuple[str, ...] = (), helps: dict | None = None, skip: tuple[str, ...] = ()) -> None:
    """One flag per RunConfig field; the help shows ``recipe``'s value where the recipe sets one, or ``shown``'s.
    ``refused`` fields (ones the command does not use) are hidden flags whose error says so; ``helps`` replaces
    the field's help where the command means something else by it; ``skip`` fields get no flag (the command
    defines its own)."""
    from vissl_lite.config import load_recipe

    defaults = RunConfig().to_dict() | (load_recipe(recipe) if recipe else {}) | (shown or {})
    for name, f in FIELDS.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        kind, _ = _base_type(name)
        if name in refused:
            flags = [flag] + (["--no-" + name.replace("_", "-")] if kind is bool else [])
            parser.add_argument(*flags, nargs="?", action=_NotUsed, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        default = defaults[name]
        default = "auto" if default is None and name == "small_input" else default
        help_text = f"{(helps or {}).get(name, f.metadata.get('help', ''))} [default: {default!r}]".replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar=kind.__name__.upper(), help=help_text)


# How linear-probe and knn read their data (the run's values unless given; useful with another --data).
EVAL_DATA_FLAGS = ("val_fraction", "data_mode", "memory_limit_gb", "on_bad_file")


def _add_eval_flags(parser: argparse.ArgumentParser, fields: tuple[str, ...], default_dir: str) -> None:
    parser.add_argument("--checkpoint", required=True, help="run folder (or its checkpoint.pt) from 'vissl-lite "
                        "pretrain'")
    parser.add_argument("--data", default=None, help="labeled data to evaluate on (default: the run's own --data)")
    parser.add_argument("--out", default=None, help=f"folder for metrics.json (default: RUN/{default_dir}, "
                        f"or RUN/{default_dir}_<data name> for --data other than the run's own)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps [default: auto]")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also evaluate the random-init backbone [default: on]")
    for name in fields:
        parser.add_argument("--" + name.replace("_", "-"), default=argparse.SUPPRESS,
                            help=f"{FIELDS[name].metadata['help']} [default: the run's own, from its config.yaml; "
                                 f"the recipes' default is {RunConfig().to_dict()[name]!r}]".replace("%", "%%"))
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                        help="show progress bars [default: on]")
    # Every other config flag is the run's own (the backbone was trained with it): say so instead of argparse's
    # "unrecognized arguments".
    taken = set(fields) | {"data", "out", "device", "progress"}
    for name in FIELDS:
        if name not in taken:
            flags = ["--" + name.replace("_", "-")]
            if _base_type(name)[0] is bool:
                flags.append("--no-" + name.replace("_", "-"))
            parser.add_argument(*flags, nargs="?", action=_FixedByRun, default=argparse.SUPPRESS,
                                help=argparse.SUPPRESS)


class _NotUsed(argparse.Action):
    """A pretraining-only flag given to finetune: an error instead of a silently ignored value."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is a pretraining option; {parser.prog} does not use it (see "
                     f"{parser.prog} --help)")


class _FixedByRun(argparse.Action):
    """A pretraining flag given to linear-probe or knn: an error naming what the command does take."""

    def __call__(self, parser, namespace, values, option_string=None):
        takes = [a.option_strings[0] for a in parser._actions
                 if a.option_strings and a.help != argparse.SUPPRESS and a.option_strings[0] != "-h"]
        if self.dest.startswith(("probe_", "knn_")):
            other = "knn" if self.dest.startswith("knn_") else "linear-probe"
            parser.error(f"{option_string} is an option of vissl-lite {other}, not of {parser.prog}. Flags "
                         f"{parser.prog} takes: {' '.join(takes)}")
        from vissl_lite.eval.finetune import ARCH_KEYS

        if self.dest in ARCH_KEYS + ("window",):  # fine-tuning a checkpoint keeps these too
            fix = (f"To use another value, pretrain again with it; 'vissl-lite finetune --checkpoint' keeps the "
                   f"run's {option_string} as well ('--init scratch' trains a new backbone with any value)")
        else:
            fix = "To train with another value, pretrain again or fine-tune (vissl-lite finetune)"
        parser.error(f"{option_string} is set by the pretraining run (its config.yaml), so {parser.prog} cannot "
                     f"change it; it evaluates the run as trained. Flags it takes: {' '.join(takes)}. {fix}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vissl-lite", description="Self-supervised pretraining of timm backbones "
                                     "(SimCLR, MAE, DAE) with on-device augmentation, and linear-probe evaluation.")
    parser.add_argument("--version", action="version", version=f"vissl-lite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    pre = sub.add_parser("pretrain", help="pretrain a backbone, then linear-probe it against a random-init one",
                         description="Pretrain a backbone with a self-supervised method. With no arguments: the "
                         "quickstart recipe on the built-in data, ending with the linear probe of the SSL backbone "
                         "and of a random-init backbone." + RECIPE_NOTE,
                         epilog=EPILOG_PRETRAIN.format(recipes=", ".join(pretrain_recipes())),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    pre.add_argument("--config", default=None, help=_PRETRAIN_ONLY_HELP["config"])
    _add_config_flags(pre, recipe=DEFAULT_RECIPE)

    lp = sub.add_parser("linear-probe", help="linear-probe a pretrained run (and a random-init baseline)",
                        description="Extract frozen features once, train BatchNorm1d(affine=False)+Linear with a "
                        "learning-rate sweep picked on the validation split, report test top-1. Writes "
                        "<out>/metrics.json with eval.linear_probe and eval.linear_probe_random_init.")
    _add_eval_flags(lp, ("probe_epochs", "probe_lrs", "probe_batch_size", "seed", "label_fraction",
                         "labels_per_class", "seeds", *EVAL_DATA_FLAGS), "linear_probe")
    kn = sub.add_parser("knn", help="weighted kNN on a pretrained run's frozen features (and a random-init baseline)",
                        description="L2-normalised frozen features; the k nearest train features vote with weight "
                        "exp(cos/T); test top-1 for each k. Writes <out>/metrics.json with eval.knn and "
                        "eval.knn_random_init.")
    _add_eval_flags(kn, ("knn_k", "knn_temperature", "seed", "label_fraction", "labels_per_class", "seeds",
                         *EVAL_DATA_FLAGS), "knn")

    ft = sub.add_parser("finetune", help="fine-tune the whole network with a classifier head (vs from scratch)",
                        description="Fine-tune backbone + linear head through the training loop, select the weights "
                        "on the validation split, report test metrics; by default also from scratch with the same "
                        "settings. Several --label-fraction values and --seeds give a label-efficiency curve. "
                        "Writes <out>/metrics.json and <out>/report.md with plots.",
                        epilog=EPILOG_FINETUNE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ft.add_argument("--checkpoint", default=None, help="pretraining run folder (or its checkpoint.pt); fixes the "
                    "backbone, image size, channels and (unless --data) the data")
    ft.add_argument("--init", default=None, choices=("checkpoint", "scratch", "weights"),
                    help="initialisation [default: checkpoint with --checkpoint, weights with --init-weights; "
                    "without either, give --init scratch]")
    ft.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                    help="also fine-tune from scratch with the same settings and seeds [default: on]")
    ft.add_argument("--config", default="finetune", help="recipe [default: finetune]; with --checkpoint, the "
                    "backbone, image size, channels, normalisation and data come from the run")
    _add_config_flags(ft, recipe="finetune", refused=FINETUNE_UNUSED, helps={
        "resume": "Finish an interrupted fine-tuning in --out: sub-runs with a result.json are reused, the one "
                  "that was stopped starts over."})

    tr = sub.add_parser("transfer", help="SSL pretraining, then linear probe, kNN and fine-tuning at several label "
                        "fractions and seeds against random init, one report",
                        description="One command for transfer to a labeled (e.g. medical) dataset: self-supervised "
                        "pretraining on unlabeled images (default: the labeled set's own train images, labels "
                        "unused), then linear probe and kNN on frozen features and fine-tuning, each at several "
                        "label fractions and seeds against random initialisation (and against --init-weights when "
                        "given). Writes <out>/report.md with a MedMNIST-style table (ACC and AUC, mean ± std) and "
                        "label-efficiency plots, and <out>/metrics.json. Every config flag below sets pretraining; "
                        "evaluation flags (--label-fraction, --seeds, --knn-k, --probe-*) apply to every step."
                        + RECIPE_NOTE,
                        epilog=EPILOG_TRANSFER, formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("--config", default=None, help="pretraining recipe [default: <method>_quickstart]")
    tr.add_argument("--pretrain-data", default=None, help="unlabeled images for pretraining (any --data spec) "
                    "[default: the --data train split]")
    tr.add_argument("--checkpoint", default=None, help="evaluate this existing pretraining run instead of "
                    "pretraining")
    tr.add_argument("--finetune-args", default=None, help="overrides of the fine-tuning recipe as key=value pairs, "
                    "e.g. 'epochs=20,lr=1e-3,augment=crop_flip'")
    tr.add_argument("--protocols", default=",".join(PROTOCOLS), help="which evaluations, comma-separated "
                    f"[default: {','.join(PROTOCOLS)}]")
    _add_config_flags(tr, recipe=DEFAULT_RECIPE, shown={"label_fraction": [0.01, 0.1, 1.0], "seeds": 3,
                                                        "knn_k": [20], "data": "required"}, helps={
        "resume": "Finish an interrupted transfer in --out: pretraining continues from its checkpoint, finished "
                  "steps (and fine-tuning sub-runs) are reused."})

    ex = sub.add_parser("export", help="write a run's backbone weights as safetensors that timm loads",
                        description="Write the backbone's weights (no projection head or decoder) to a .safetensors "
                        "file and print the timm.create_model call that loads them.")
    ex.add_argument("--checkpoint", required=True, help="run folder (or its checkpoint.pt)")
    ex.add_argument("--out", default=None, help="file to write, ending in .safetensors, or a folder (existing, or "
                    "written with a trailing '/') for backbone.safetensors [default: backbone.safetensors in the "
                    "run folder; <name>.backbone.safetensors beside any other checkpoint file]")

    pv = sub.add_parser("preview", help="draw what an augmentation recipe does to your images, before training",
                        description="Draw the first --n images of --data (top row: as evaluation sees them) and the "
                        "views --augment with --augment-args makes of each for --method, de-normalised and seeded "
                        "by --seed, so a recipe can be checked on your own images before any training.")
    pv.add_argument("--config", default=None, help="recipe [default: <method>_quickstart]")
    pv.add_argument("--n", type=int, default=8, help="number of images [default: 8]")
    pv.add_argument("--split", default="train", choices=("train", "val", "test"), help="split [default: train]")
    pv.add_argument("--out", dest="png", default=None, help="PNG to write [default: augment_<recipe>.png here]")
    _add_config_flags(pv, recipe=DEFAULT_RECIPE, refused=tuple(k for k in FIELDS if k not in PREVIEW_FLAGS),
                      skip=("out",))

    rc = sub.add_parser("reconstruct", help="draw original / corrupted / reconstructed images (mae, dae)",
                        description="Draw a grid with rows original / model input (masked or noisy) / "
                        "reconstruction, de-normalised (with norm_pix_loss, each patch's statistics are undone).")
    rc.add_argument("--checkpoint", required=True, help="run folder (or its checkpoint.pt) of an mae or dae run")
    rc.add_argument("--out", default=None, help="PNG to write [default: reconstructions_<split>_<n>.png in the run "
                    "folder]")
    rc.add_argument("--data", default=None, help="images to reconstruct (default: the run's own --data)")
    rc.add_argument("--split", default="test", choices=("train", "val", "test"), help="split [default: test]")
    rc.add_argument("--n", type=int, default=8, help="number of images [default: 8]")
    rc.add_argument("--device", default="auto", help="auto, cpu, cuda or mps [default: auto]")
    return parser


def _pretrain(args: argparse.Namespace) -> None:
    from vissl_lite.pretraining import pretrain

    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    recipe = args.config
    if given.get("resume") and not given.get("out"):  # the default --out is a fresh, dated folder
        raise ConfigError("--resume needs --out RUN: the folder of the run to continue")
    if recipe is None and given.get("resume") and given.get("out"):
        recipe = _resume_recipe(Path(given["out"]))
    elif recipe is not None and "out" not in given and not given.get("resume"):
        from vissl_lite.config import load_recipe
        from vissl_lite.runs import CHECKPOINT

        old = load_recipe(recipe).get("out")
        if old and (Path(old) / CHECKPOINT).is_file():  # a run's saved config.yaml, reused to train again
            given |= {"out": "", "resume": False}
            print(f"  note: --config {recipe} is the saved config of the run in {old}; this run gets a new folder "
                  f"(--out to choose one; to continue that run instead: vissl-lite pretrain --out {old} --resume)")
    pretrain(make_config(recipe, **given))


def _resume_recipe(run: Path) -> str | None:
    """The recipe a resume starts from: the run's config.yaml, which holds the settings of its latest start. A
    config.yaml that is missing, unreadable or short of keys the checkpoint's config has (a disk that filled up,
    an editor) is rewritten from the config saved in the checkpoint, with a note."""
    from vissl_lite.config import config_from_dict, load_recipe, save_config
    from vissl_lite.runs import CHECKPOINT, load_checkpoint

    saved, ckpt = run / "config.yaml", run / CHECKPOINT
    if not ckpt.is_file():  # pretrain's own error says there is nothing to resume
        return str(saved) if saved.is_file() else None
    config = load_checkpoint(ckpt)["config"]
    try:
        missing = sorted(set(config) - set(load_recipe(str(saved))))
        problem = f"missing key(s) {', '.join(missing)}" if missing else ""
    except ConfigError as e:
        problem = "missing" if not saved.is_file() else f"unreadable ({e})"
    if problem:
        save_config(config_from_dict(config), saved)
        print(f"  note: {saved} was {problem}; rewrote it from the config saved in {ckpt}")
    return str(saved)


def _evaluate(args: argparse.Namespace) -> None:
    from vissl_lite.config import parse_value
    from vissl_lite.eval.probe import evaluate_run

    overrides = {k: parse_value(k, v) for k, v in vars(args).items()
                 if k in FIELDS and k not in ("data", "out", "device")}
    evaluate_run(args.command, args.checkpoint, data=args.data, out=args.out, device=args.device,
                 baseline=args.baseline, **overrides)


def _finetune(args: argparse.Namespace) -> None:
    from vissl_lite.eval.finetune import finetune

    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    if not (args.checkpoint or args.init or given.get("init_weights")):
        raise ConfigError("finetune needs a starting point: --checkpoint RUN (a pretraining run), --init-weights "
                          "FILE (timm weights) or --init scratch (random init, no comparison)")
    finetune(args.checkpoint, init=args.init, init_weights=given.pop("init_weights", None) or None,
             baseline=args.baseline, recipe=args.config, **given)


def _transfer(args: argparse.Namespace) -> None:
    from vissl_lite.config import _parse_kv, parse_value
    from vissl_lite.eval.transfer import transfer

    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    data = given.pop("data", None)
    if not data:
        raise ConfigError("transfer needs --data: the labeled downstream dataset (e.g. pneumoniamnist.npz)")
    try:
        ft_args = _parse_kv(args.finetune_args) if args.finetune_args else {}
    except ValueError as e:
        raise ConfigError(f"--finetune-args: {e}") from e
    protocols = tuple(p.strip().replace("-", "_") for p in args.protocols.split(",") if p.strip())
    out = given.pop("out", None)
    resume = parse_value("resume", given.pop("resume", False))
    transfer(data, pretrain_data=args.pretrain_data, checkpoint=args.checkpoint, out=out, recipe=args.config,
             finetune_args=ft_args, protocols=protocols, resume=resume, **given)


def _export(args: argparse.Namespace) -> None:
    from vissl_lite.export import export_backbone, how_to_load
    from vissl_lite.runs import CHECKPOINT, find_checkpoint

    ckpt = find_checkpoint(args.checkpoint)
    out = args.out or ckpt.parent / ("backbone.safetensors" if ckpt.name == CHECKPOINT
                                     else f"{ckpt.stem}.backbone.safetensors")
    info = export_backbone(args.checkpoint, out)
    print(f"wrote {info['file']} ({info['tensors']} tensors of {info['backbone']})")
    print(how_to_load(info))


def _preview(args: argparse.Namespace) -> None:
    from vissl_lite.augment.preview import preview_augment

    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    preview_augment(make_config(args.config, **given), args.n, args.png, args.split)


def _reconstruct(args: argparse.Namespace) -> None:
    from vissl_lite.eval.reconstruct import reconstruct

    if args.n <= 0:
        raise ConfigError(f"--n must be > 0, got {args.n}")
    reconstruct(args.checkpoint, out=args.out, data=args.data, split=args.split, n=args.n, device=args.device)


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--window -1000,400`` -> ``--window=-1000,400``: argparse reads a value that starts with '-' and is not a
    plain number as another option. No flag of ours starts with '-' and a digit, so such a token is a value."""
    out: list[str] = []
    for token in argv:
        if out and re.match(r"-\.?\d", token) and out[-1].startswith("--") and out[-1] != "--" and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; an argument no command knows is reported by that command's own parser, with its usage, the
    nearest flag it takes and where its flags are listed (argparse's answer is the top-level usage, which names no
    flag of any command)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(_attach_negative_values(argv))
    if extra:
        sub = parser._subparsers._group_actions[0].choices[args.command]
        flags = [s for a in sub._actions if a.help != argparse.SUPPRESS for s in a.option_strings
                 if s.startswith("--")]
        first = next((t for t in extra if t.startswith("-")), extra[0]).split("=")[0]
        close = difflib.get_close_matches(first, flags, n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        sub.error(f"unrecognized arguments: {' '.join(extra)}{hint} ({sub.prog} --help lists its flags)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_command_line(sys.argv[1:] if argv is None else list(argv))
    from vissl_lite.data import DataError
    from vissl_lite.runs import CheckpointError
    from vissl_lite.train import NonFiniteLossError, TrainingInterrupted

    try:
        from vissl_lite import dist

        if args.command != "pretrain" and dist.launched_by_torchrun():  # each process would redo every run
            raise ConfigError(f"'{args.command}' runs in one process; under torchrun only 'pretrain' is distributed. "
                              f"Pretrain with torchrun, then run 'vissl-lite {args.command}' without it"
                              + (" (--checkpoint RUN)" if args.command == "transfer" else ""))
        commands = {"pretrain": _pretrain, "linear-probe": _evaluate, "knn": _evaluate, "finetune": _finetune,
                    "transfer": _transfer, "export": _export, "reconstruct": _reconstruct,
                    "preview": _preview}
        commands[args.command](args)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError, FileExistsError,
            NonFiniteLossError) as e:
        print(f"vissl-lite {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # bad method/augment arguments, unknown backbone, unlabeled data for a probe
        print(f"vissl-lite {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"vissl-lite {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except OSError as e:  # a read-only or full output folder, a path that is a file: the system's own message
        print(f"vissl-lite {args.command}: error: {e}. Check that the output folder is writable and the disk has "
              "space", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vissl-lite {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
