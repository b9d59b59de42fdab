import pytest
import yaml

from vissl_lite.cli import build_parser, main
from vissl_lite.config import ConfigError, RunConfig, list_recipes, load_recipe, make_config, parse_value


def test_precedence_defaults_recipe_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"epochs": 7, "lr": 0.5, "method_args": {"temperature": 0.2}}))
    cfg = make_config(str(recipe), lr="0.25")
    assert cfg.epochs == 7 and cfg.lr == 0.25 and cfg.method_args == {"temperature": 0.2}
    assert cfg.batch_size == RunConfig().batch_size


def test_argument_flags_merge_into_the_recipes_own_and_a_new_method_drops_them():
    quick = load_recipe("simclr_quickstart")["augment_args"]
    assert len(quick) >= 2 and quick.get("p_blur") != 0.5  # the merge below is not vacuous
    cfg = make_config(None, augment_args="p_blur=0.5")
    assert cfg.augment_args == quick | {"p_blur": 0.5}  # not {'p_blur': 0.5}: strength and scale stay the recipe's
    assert make_config(None, augment_args="{}").augment_args == {}  # an explicit empty dict clears
    mae = load_recipe("mae_quickstart")["method_args"]
    assert make_config(None, method="mae", method_args="mask_ratio=0.6").method_args == mae | {"mask_ratio": 0.6}
    # another method or augmentation than the recipe's: its arguments belong to the one replaced
    swapped = make_config("dae_vit_quickstart", method="simclr", augment="simclr", augment_args="p_blur=0")
    assert swapped.method_args == {} and swapped.augment_args == {"p_blur": 0.0}


def test_a_vit_over_a_resnet_recipe_gets_small_patches_not_the_recipes_stem_choice():
    """The CPU recipes turn ResNet's small-input stem off; that choice must not give a ViT 16 px patches on 32 px
    images (a 2x2 token grid) or refuse 28 px. Another ResNet keeps it; an explicit flag always wins."""
    from vissl_lite.runs import build_backbone

    assert load_recipe("simclr_quickstart")["small_input"] is False  # the rule below is not vacuous
    vit = make_config(backbone="vit_tiny_patch16_224")
    assert vit.small_input is None and build_backbone(vit, 3).patch_embed.patch_size == (4, 4)
    assert make_config(backbone="vit_tiny_patch16_224", image_size=28).image_size == 28  # 28 = 7 patches of 4
    assert make_config(backbone="resnet34").small_input is False
    assert make_config(backbone="vit_tiny_patch16_224", small_input=False).small_input is False
    from vissl_lite.eval.finetune import finetune_config

    assert finetune_config(backbone="vit_tiny_patch16_224", image_size=28).small_input is None


def test_version_flag_and_module_entry_point(capsys):
    import subprocess
    import sys

    import vissl_lite

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"vissl-lite {vissl_lite.__version__}"
    out = subprocess.run([sys.executable, "-m", "vissl_lite", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"vissl-lite {vissl_lite.__version__}"


def test_default_recipe_is_method_quickstart():
    assert "simclr_quickstart" in list_recipes()
    cfg = make_config()
    assert cfg.to_dict() == make_config("simclr_quickstart").to_dict()


def test_unknown_key_in_recipe_names_it_and_lists_valid(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"learning_rate.*Valid keys: .*\blr\b"):
        load_recipe(str(recipe))


def test_recipe_that_is_not_one_yaml_mapping_of_unique_keys_is_refused(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("epochs: 3\nlr: 0.1\nepochs: 30\n")  # plain YAML keeps the last value
    with pytest.raises(ConfigError, match=r"twice.yaml.*key 'epochs' is given twice"):
        load_recipe(str(twice))
    nested = tmp_path / "nested.yaml"
    nested.write_text("augment_args:\n  scale: [0.2, 1]\n  scale: [0.5, 1]\n")
    with pytest.raises(ConfigError, match="key 'scale' is given twice"):
        load_recipe(str(nested))
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="weights.yaml is not a text file"):
        load_recipe(str(binary))
    with pytest.raises(ConfigError, match=r"is a folder; give a YAML file \(a run's own is <run>/config.yaml\)"):
        load_recipe(str(tmp_path))
    ok = tmp_path / "ok.yaml"  # the same key in two mappings is two keys
    ok.write_text("lr: 0.5\naugment_args: {lr: 1}\nmethod_args: {lr: 2}\n")
    assert load_recipe(str(ok)) == {"lr": 0.5, "augment_args": {"lr": 1}, "method_args": {"lr": 2}}


@pytest.mark.parametrize("key,value,match", [
    ("epochs", "ten", "bad value 'ten' for config key 'epochs'"),
    ("lr", True, "bad value True for config key 'lr'"),
    ("optimizer", "adam", "Valid: adamw, lars, sgd"),
    ("method", "byol", "unknown method 'byol'. Valid: simclr, mae, dae$"),
    ("batch_size", 0, "'batch_size' \\(--batch-size\\) must be > 0"),
    ("val_fraction", 1.5, "val_fraction"),
    ("in_chans", 2, "in_chans"),
    ("backbone", "resnet_18", "unknown timm model 'resnet_18'. Closest names: resnet18"),
    ("augment", "crop_flip", "--method simclr takes 2 view.*use --augment simclr"),
    ("resume", "maybe", "resume"),
    ("lr", "inf", r"'lr' \(--lr\) must be a finite number, got inf"),
    ("lr", "nan", r"'lr' \(--lr\) must be a finite number, got nan"),
    ("weight_decay", "nan", r"'weight_decay' \(--weight-decay\) must be a finite number"),
    ("label_fraction", "0.1,nan", r"need label_fraction values in \(0, 1\].*got \[0.1, 'nan'\]"),
])
def test_bad_values_fail_before_work(key, value, match):
    with pytest.raises(ConfigError, match=match):
        make_config(**{key: value})


def test_method_quickstarts_and_method_backbone_checks():
    assert make_config(method="mae").backbone.startswith("vit") and make_config(method="dae").augment == "crop_flip"
    with pytest.raises(ConfigError, match="--method mae needs a ViT backbone; 'resnet18'"):
        make_config(method="mae", backbone="resnet18")
    with pytest.raises(ConfigError, match="unknown method_args for 'dae': sigmaa. Valid: noise, sigma"):
        make_config(method="dae", method_args={"sigmaa": 1})


def test_unknown_recipe_lists_shipped():
    with pytest.raises(ConfigError, match="simclr_quickstart"):
        make_config("no_such_recipe")


def test_parse_value_forms():
    assert parse_value("method_args", "temperature=0.5,proj_dim=64") == {"temperature": 0.5, "proj_dim": 64}
    assert parse_value("method_args", '{"temperature": 0.2}') == {"temperature": 0.2}
    assert parse_value("probe_lrs", "0.1,1") == [0.1, 1]
    assert parse_value("small_input", "auto") is None and parse_value("small_input", "true") is True


def test_every_field_is_a_kebab_flag():
    help_text = build_parser()._subparsers._group_actions[0].choices["pretrain"].format_help()
    for name in RunConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text


def test_cli_reports_config_errors_without_traceback(capsys):
    assert main(["pretrain", "--epochs", "-1"]) == 2
    assert "'epochs' (--epochs) must be >= 0" in capsys.readouterr().err
    assert main(["pretrain", "--method-args", "temprature=0.5", "--max-steps", "1", "--no-probe"]) == 2
    assert "unknown method_args for 'simclr': temprature. Valid: " in capsys.readouterr().err
    assert main(["pretrain", "--resume"]) == 2  # not "no checkpoint at runs/<a dated folder made up now>"
    assert "--resume needs --out RUN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--no-such-flag", "1"])


@pytest.mark.parametrize("command,argv,says", [
    ("linear-probe", ["--image-size", "64"], "--image-size is set by the pretraining run"),
    ("knn", ["--no-small-input"], "--no-small-input is set by the pretraining run"),
    ("linear-probe", ["--knn-k", "5"], "--knn-k is an option of vissl-lite knn"),
    ("knn", ["--probe-epochs", "5"], "--probe-epochs is an option of vissl-lite linear-probe"),
])
def test_eval_commands_explain_flags_the_run_fixes(capsys, command, argv, says):
    """linear-probe and knn take no pretraining flags: the error says why and lists the flags they do take,
    rather than argparse's bare 'unrecognized arguments'."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--checkpoint", "run", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and says in err and "--label-fraction" in err and "unrecognized" not in err
    assert "--image-size" not in build_parser()._subparsers._group_actions[0].choices[command].format_help()


@pytest.mark.parametrize("argv,nearest", [
    (["export", "--checkpoint", "run", "--outt", "b.safetensors"], "--out"),
    (["reconstruct", "--checkpoint", "run", "--splt", "val"], "--split"),
    (["pretrain", "--epocs", "3"], "--epochs"),
    (["preview", "--no-such-flag"], None),
])
def test_unknown_flag_is_answered_by_its_command(capsys, argv, nearest):
    """An unknown flag gets the command's own usage and the nearest flag it takes, not the top-level usage."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"usage: vissl-lite {argv[0]}" in err and f"vissl-lite {argv[0]}: error: unrecognized arguments" in err
    assert f"{argv[0]} --help lists its flags" in err
    assert (f"did you mean {nearest}" in err) if nearest else "did you mean" not in err


def test_eval_commands_parse_only_the_flags_given():
    """The hidden pretraining flags of linear-probe and knn add nothing to the namespace unless used (a None for
    every config field would override the run's config)."""
    for command in ("linear-probe", "knn"):
        args = build_parser().parse_args([command, "--checkpoint", "run", "--data-mode", "stream", "--seeds", "2"])
        given = {k for k in vars(args) if k in RunConfig.__dataclass_fields__} - {"data", "out", "device"}
        assert given == {"data_mode", "seeds"}  # data, out and device are the commands' own (default: the run's)


def test_help_shows_the_defaults_that_run_and_finetune_refuses_pretraining_flags(capsys):
    """pretrain and transfer --help show the default recipe's values (what a plain run uses), transfer its own
    evaluation defaults; finetune hides pretraining-only flags and refuses them instead of ignoring them."""
    from vissl_lite.config import load_recipe

    helps = {c: build_parser()._subparsers._group_actions[0].choices[c].format_help().replace("\n", " ")
             for c in ("pretrain", "transfer", "finetune")}
    epochs = load_recipe("simclr_quickstart")["epochs"]
    for command in ("pretrain", "transfer"):
        assert f"[default: {epochs}]" in " ".join(helps[command].split())
    transfer_help = " ".join(helps["transfer"].split())
    assert "[default: [0.01, 0.1, 1.0]]" in transfer_help and "[default: 3]" in transfer_help
    assert "--probe-epochs" not in helps["finetune"] and "--keep-checkpoints" not in helps["finetune"]
    with pytest.raises(SystemExit):
        main(["finetune", "--init", "scratch", "--knn-every", "1"])
    assert "--knn-every is a pretraining option" in capsys.readouterr().err


def test_a_runs_saved_config_reused_as_recipe_trains_a_new_run(npz_gray, tmp_path, monkeypatch, capsys):
    """config.yaml holds its run's out: reused with --config it must start a new run, not refuse ('already holds a
    checkpoint') or continue the old one."""
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first"
    args = ["--data", str(npz_gray), "--backbone", "test_resnet", "--image-size", "16", "--batch-size", "12",
            "--max-steps", "1", "--no-probe", "--no-progress"]
    assert main(["pretrain", *args, "--out", str(first)]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--config", str(first / "config.yaml"), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert f"is the saved config of the run in {first}; this run gets a new folder" in out
    new = [p for p in (tmp_path / "runs").iterdir() if (p / "checkpoint.pt").is_file()]
    assert len(new) == 1 and yaml.safe_load((new[0] / "config.yaml").read_text())["seed"] == 1


def test_a_wrongly_typed_recipe_value_names_the_file(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("epochs: ten\n")
    with pytest.raises(ConfigError, match=r"recipe .*mine.yaml: bad value 'ten' for config key 'epochs'"):
        make_config(str(recipe))
    for std, match in (("0,0,0", "every std > 0"), ("a,b,c", "numbers per channel")):
        with pytest.raises(ConfigError, match=match):
            make_config(mean="0.5,0.5,0.5", std=std)
    with pytest.raises(ConfigError, match=r"'probe_lrs' \(--probe-lrs\) must be a non-empty list of positive"):
        make_config(probe_lrs="0.1,abc")


def test_pretrain_leaves_the_callers_config_alone_so_a_seed_loop_works(npz_gray, tmp_path, monkeypatch):
    from vissl_lite.pretraining import pretrain

    monkeypatch.chdir(tmp_path)
    cfg = make_config(data=str(npz_gray), backbone="test_resnet", image_size=16, batch_size=12, max_steps=1,
                      probe=False, progress=False)
    outs = [pretrain(cfg, seed=seed)["config"]["out"] for seed in (0, 1)]  # within one second, often
    assert cfg.out == "" and outs[0] != outs[1] and all((tmp_path / o / "checkpoint.pt").is_file() for o in outs)
