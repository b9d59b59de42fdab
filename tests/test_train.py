import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from vissl_lite import runs
from vissl_lite.cli import main
from vissl_lite.config import ConfigError, make_config
from vissl_lite.eval.linear_probe import fit_linear_probe
from vissl_lite.pretraining import pretrain
from vissl_lite.train import NonFiniteLossError, lr_at

from .conftest import clustered_features, crash_pretrain

FAST = dict(backbone="resnet18", image_size=16, batch_size=16, epochs=1, log_every=2, checkpoint_every=3,
            progress=False, probe=False, warmup_epochs=0.5)


def test_lr_schedule_warmup_peak_cosine_end():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    values = [lr_at(s, 100, 10, 1.0) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("optimizer", ["adamw", "lars", "sgd"])
def test_each_optimizer_trains(npz_rgb_noval, tmp_path, optimizer):
    m = pretrain(make_config(data=str(npz_rgb_noval), out=str(tmp_path / optimizer), optimizer=optimizer,
                             lr=0.05 if optimizer != "adamw" else 1e-3, **FAST | {"epochs": 2}))
    assert m["train"]["steps"] == 8 and m["train"]["final_loss"] is not None


def test_log_lines_hold_the_mean_over_their_steps(npz_rgb_noval, tmp_path):
    def log(run, every):  # the same seed and steps; only how often the loop reads the sums back differs
        pretrain(make_config(data=str(npz_rgb_noval), out=str(tmp_path / run), max_steps=6,
                             **FAST | {"log_every": every, "epochs": 2}))
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    each, every3 = log("each", 1), log("every3", 3)
    assert [r["step"] for r in every3] == [3, 6]
    for line, first in zip(every3, (0, 3)):
        for key in ("loss", "pos_acc"):
            mean = sum(r[key] for r in each[first:first + 3]) / 3
            assert line[key] == pytest.approx(mean, abs=2e-5)  # (each value is rounded to 5 decimals)
    assert every3[0]["loss"] != each[2]["loss"]  # not the last batch's value


def test_checkpoint_roundtrip_is_weights_only_and_atomic(npz_rgb_noval, tmp_path):
    cfg = make_config(data=str(npz_rgb_noval), out=str(tmp_path / "run"), max_steps=2, **FAST)
    pretrain(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "step", "config", "rng", "version", "resumes", "train_seconds",
                         "world_size", "train_images", "split_rule"} and ckpt["world_size"] == 1
    assert ckpt["step"] == 2 and ckpt["resumes"] == [] and ckpt["train_seconds"] > 0
    cfg2, model, _ = runs.load_run(tmp_path / "run")
    assert cfg2.to_dict() == ckpt["config"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert (tmp_path / "run" / "config.yaml").is_file()
    # the temporary file's private mode (mkstemp: 0600) does not stick: the same mode as the run's other files
    mode = lambda f: (tmp_path / "run" / f).stat().st_mode & 0o777  # noqa: E731
    assert mode("checkpoint.pt") == mode("config.yaml")


@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(npz_rgb_noval, tmp_path, monkeypatch, amp, capsys):
    # 72 train images / 16 = 4 steps per epoch; fp16 also carries the loss scaler's state across the resume
    common = dict(data=str(npz_rgb_noval), amp=amp, **FAST | {"epochs": 2})
    pretrain(make_config(out=str(tmp_path / "straight"), **common))
    # dies mid-epoch 2; the last checkpoint is step 3
    crash_pretrain(monkeypatch, 5, lambda: pretrain(make_config(out=str(tmp_path / "split"), **common)))
    assert runs.load_checkpoint(tmp_path / "split")["step"] == 3
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(make_config(out=str(tmp_path / "split"), **common))
    capsys.readouterr()
    pretrain(make_config(out=str(tmp_path / "split"), resume=True, **common))
    said = capsys.readouterr().out
    assert "resuming from step 3 of 8" in said and "8 steps (5 after resuming)" in said
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    # the scale and the count of steps since it last changed, as if the run had never stopped
    assert a.get("scaler") == b.get("scaler") and ("scaler" in a) == (amp == "fp16")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["optimizer"]["state"].items():
        assert all(torch.equal(t, b["optimizer"]["state"][k][n]) for n, t in v.items() if torch.is_tensor(t))
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("clang++") is None,
                    reason="torch.compile on CPU needs a C++ compiler (g++ or clang++)")
def test_compile_trains_like_eager_and_writes_the_same_checkpoint_keys(npz_rgb_noval, tmp_path):
    from torch._dynamo.utils import counters

    common = dict(data=str(npz_rgb_noval), max_steps=3, **FAST | {"backbone": "test_resnet"})  # a small compile
    pretrain(make_config(out=str(tmp_path / "eager"), **common))
    counters.clear()
    pretrain(make_config(out=str(tmp_path / "compiled"), compile=True, **common))
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really compiled something
    a = torch.load(tmp_path / "eager" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "compiled" / "checkpoint.pt", weights_only=True)["model"]
    assert list(a) == list(b)  # no "_orig_mod." prefix: the run loads, resumes and exports as an eager one
    runs.load_run(tmp_path / "compiled")
    logs = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("eager", "compiled")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [2, 3]
    for e, c in zip(*logs):  # fused kernels round differently, nothing more
        assert c["loss"] == pytest.approx(e["loss"], rel=1e-4)
    # AdamW moves a weight by about lr per step whatever the gradient's size, so a rounding difference in a
    # near-zero gradient can change that weight's step by up to 2 lr (about 3% of the weights here); the rest must
    # agree closely, and the whole set (3e-4 apart here) far more closely than three steps move it (over 10%)
    wa, wb = (torch.cat([m[k].flatten().double() for k in a if m[k].is_floating_point()]) for m in (a, b))
    assert ((wb - wa).abs() <= 1e-5 + 1e-4 * wa.abs()).double().mean() > 0.9
    assert (wb - wa).norm() / wa.norm() < 2e-3


def test_checkpoints_from_before_the_output_batchnorm_still_load(npz_rgb_noval, tmp_path):
    defaults = make_config(data=str(npz_rgb_noval), **FAST).method_args
    cfg = make_config(data=str(npz_rgb_noval), out=str(tmp_path / "old"), max_steps=1,
                      method_args=defaults | {"proj_out_bn": False}, **FAST)
    pretrain(cfg)
    path = tmp_path / "old" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["config"]["method_args"]["proj_out_bn"]  # what an older vissl-lite wrote
    torch.save(ckpt, path)
    cfg2, model, _ = runs.load_run(tmp_path / "old")
    assert cfg2.method_args["proj_out_bn"] is False and isinstance(model.projector[-1], torch.nn.Linear)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    with pytest.raises(RuntimeError, match="proj_out_bn=false"):
        pretrain(make_config(data=str(npz_rgb_noval), out=str(tmp_path / "old"), max_steps=2, resume=True, **FAST))


def test_a_run_on_a_relative_data_path_resumes_and_evaluates_from_any_working_folder(npz_rgb_noval, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.chdir(npz_rgb_noval.parent)
    run = tmp_path / "rel"
    pretrain(make_config(data=npz_rgb_noval.name, out=str(run), max_steps=1, **FAST))
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == str(npz_rgb_noval)  # stored absolute
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "--out", str(run), "--resume", "--max-steps", "2", "--no-progress"]) == 0
    spelled = f"{npz_rgb_noval.parent}/../{npz_rgb_noval.parent.name}/{npz_rgb_noval.name}"  # the same file
    m = pretrain(make_config(data=spelled, out=str(run), max_steps=3, resume=True, **FAST))
    assert m["train"]["steps"] == 3


@pytest.mark.parametrize("damage", ["empty", "cut", "missing"])
def test_resume_repairs_a_damaged_config_yaml_from_the_checkpoint(npz_rgb_noval, tmp_path, capsys, damage):
    run = tmp_path / "run"
    pretrain(make_config(data=str(npz_rgb_noval), out=str(run), max_steps=1, **FAST))
    saved = run / "config.yaml"
    text = saved.read_text()
    if damage == "missing":
        saved.unlink()
    else:  # a disk that filled up mid-write: nothing, or the first half of the lines
        saved.write_text("" if damage == "empty" else "".join(text.splitlines(keepends=True)[:10]))
    # without the repair the shipped recipe fills the gaps, and its image size is not the run's: refused
    assert main(["pretrain", "--out", str(run), "--resume", "--max-steps", "2", "--no-progress"]) == 0
    assert f"note: {saved} was" in capsys.readouterr().out
    assert yaml.safe_load(saved.read_text()) == yaml.safe_load(text) | {"max_steps": 2, "resume": True}


def test_resume_refuses_a_data_folder_whose_contents_changed(tmp_path):
    from PIL import Image

    folder = tmp_path / "unlab"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((10, 10, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
    common = dict(data=str(folder), out=str(tmp_path / "r"), **(FAST | {"batch_size": 4}))
    pretrain(make_config(max_steps=1, **common))
    for i in range(3):
        (folder / f"{i}.png").unlink()
    with pytest.raises(ConfigError, match=r"training data changed.*12 training images then, 9 now"):
        pretrain(make_config(max_steps=2, resume=True, **common))


def test_resume_refuses_a_different_model(npz_rgb_noval, tmp_path):
    common = dict(data=str(npz_rgb_noval), out=str(tmp_path / "r"), max_steps=1, **FAST)
    pretrain(make_config(**common))
    with pytest.raises(ConfigError, match="backbone: checkpoint 'resnet18' vs now 'resnet10t'"):
        pretrain(make_config(**(common | {"backbone": "resnet10t", "resume": True})))


def test_resume_with_a_changed_schedule_says_so_and_records_it(npz_rgb_noval, tmp_path, capsys):
    """A lower lr (after a NaN) or more steps on resume is allowed, but config.yaml then holds only the new
    values: the console says what changed and metrics.json keeps every resume's changes and the step it
    continued from. The training time counts every segment. The data's window is part of the run's identity."""
    common = dict(data=str(npz_rgb_noval), out=str(tmp_path / "r"), **FAST)
    pretrain(make_config(max_steps=2, **common))
    saved_seconds = runs.load_checkpoint(tmp_path / "r")["train_seconds"]  # the first segment, up to its save
    capsys.readouterr()
    m = pretrain(make_config(max_steps=3, lr=5e-4, resume=True, **common))
    said = capsys.readouterr().out
    assert "note: resuming with changed settings: max_steps 2 -> 3, lr 0.002 -> 0.0005" in said  # recipe's lr
    assert m["train"]["resumed"] == [{"step": 2, "changed": {"max_steps": [2, 3], "lr": [0.002, 0.0005]}}]
    assert m["train"]["seconds"] == pytest.approx(saved_seconds + m["timing"]["pretrain_s"], abs=0.11)  # both
    m = pretrain(make_config(max_steps=4, lr=5e-4, knn_every=1, resume=True, **common))  # history carries over
    assert [r["step"] for r in m["train"]["resumed"]] == [2, 3] and m["train"]["resumed"][1]["changed"] == {
        "max_steps": [3, 4], "knn_every": [0, 1]}  # a monitor switched on at resume: its log starts at step 4
    with pytest.raises(ConfigError, match="window: checkpoint 'auto' vs now 'file'"):
        pretrain(make_config(max_steps=5, window="file", resume=True, **common))


def test_nonfinite_loss_stops_with_message_and_keeps_last_good_checkpoint(npz_rgb_noval, tmp_path, monkeypatch):
    import vissl_lite.methods.simclr as simclr

    real, calls = simclr.ntxent, {"n": 0}

    def poisoned(z1, z2, t):
        calls["n"] += torch.is_grad_enabled()  # training steps only, not runs.check_fits' no-grad forward
        loss = real(z1, z2, t)
        return loss * float("nan") if calls["n"] > 3 else loss

    monkeypatch.setattr(simclr, "ntxent", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"between steps 3 and 4.*last good checkpoint.*step 3"):
        pretrain(make_config(data=str(npz_rgb_noval), out=str(tmp_path / "nan"), max_steps=6, **FAST))
    ckpt = runs.load_checkpoint(tmp_path / "nan")
    assert ckpt["step"] == 3 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_an_update_that_overflows_the_weights_is_never_checkpointed(npz_rgb_noval, tmp_path, monkeypatch):
    """The loss of step 4 is finite but its update leaves an infinite weight: the checkpoint due at step 4 is not
    written over the good one of step 2, which a resume can train from."""
    import vissl_lite.pretraining as pretraining

    real, steps = pretraining.build_optimizer, {"n": 0}

    def overflowing(model, cfg):
        optimizer = real(model, cfg)

        def after_step(opt, args, kwargs):
            steps["n"] += 1
            if steps["n"] == 4:
                weight = next(model.parameters())
                with torch.no_grad():
                    weight[(0,) * weight.dim()] = float("inf")

        optimizer.register_step_post_hook(after_step)
        return optimizer

    monkeypatch.setattr(pretraining, "build_optimizer", overflowing)
    cfg = dict(data=str(npz_rgb_noval), out=str(tmp_path / "inf"), max_steps=4, **(FAST | {"checkpoint_every": 2}))
    with pytest.raises(NonFiniteLossError, match=r"the weights became NaN or infinite between steps 2 and 4.*step 2"):
        pretrain(make_config(**cfg))
    ckpt = runs.load_checkpoint(tmp_path / "inf")
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    monkeypatch.setattr(pretraining, "build_optimizer", real)
    assert pretrain(make_config(**cfg, resume=True))["train"]["steps"] == 4  # the resume the message advises


def test_unsafe_checkpoint_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "checkpoint.pt", "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(RuntimeError, match="refuses"):
        runs.load_checkpoint(tmp_path)


def test_linear_probe_separable_features_and_selection_on_val():
    split = clustered_features(4, 16, spread=5.0)
    g = torch.Generator().manual_seed(1)
    res = fit_linear_probe(split(200), split(80), split(80), 4, [0.001, 0.1], epochs=20, batch_size=32)
    assert res["top1"] == 100.0 and res["split"] == "test"
    assert res["lr"] == max(res["sweep"], key=lambda r: r["val_top1"])["lr"]
    x, y = split(200)
    shuffled = fit_linear_probe((x, y[torch.randperm(200, generator=g)]), split(400), split(400), 4, [0.1],
                                epochs=20, batch_size=32)
    assert shuffled["top1"] < 40  # chance is 25


def test_streaming_folder_pretrains_and_probes(png_tree, tmp_path):
    cfg = make_config(data=str(png_tree), out=str(tmp_path / "s"), data_mode="stream", num_workers=0,
                      **FAST | {"batch_size": 8, "probe": True, "probe_epochs": 2, "max_steps": 2})
    m = pretrain(cfg)
    assert m["train"]["steps"] == 2 and m["train"]["train_images"] == 24  # 30 minus carved val and test
    assert m["train"]["data_mode"] == "stream"
    assert 0 <= m["eval"]["linear_probe"]["top1"] <= 100 and m["eval"]["linear_probe"]["n_test"] == 3


@pytest.mark.slow
def test_cli_pretrain_then_linear_probe_end_to_end(npz_gray, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["pretrain", "--data", str(npz_gray), "--out", str(run), "--image-size", "16", "--batch-size", "12",
                 "--epochs", "2", "--probe-epochs", "5", "--no-progress", "--method-args", "temperature=0.5"])
    assert code == 0
    m = json.loads((run / "metrics.json").read_text())
    assert {"linear_probe", "linear_probe_random_init"} <= set(m["eval"])
    for key in ("linear_probe", "linear_probe_random_init"):
        assert 0 <= m["eval"][key]["top1"] <= 100 and "BatchNorm1d(affine=False)+Linear" in m["eval"][key]["protocol"]
    assert m["config"]["in_chans"] == 0 and m["environment"]["torch"] == torch.__version__
    assert (run / "train_curves.png").stat().st_size > 1000
    assert "gain from pretraining" in capsys.readouterr().out
    code = main(["linear-probe", "--checkpoint", str(run), "--probe-epochs", "3", "--no-progress", "--no-baseline"])
    assert code == 0
    lp = json.loads((run / "linear_probe" / "metrics.json").read_text())
    assert lp["command"] == "linear-probe" and "linear_probe_random_init" not in lp["eval"]
    assert "replaces the earlier" not in capsys.readouterr().out
    again = ["linear-probe", "--checkpoint", str(run), "--probe-epochs", "2", "--no-progress", "--no-baseline"]
    assert main(again) == 0
    assert f"note: this replaces the earlier linear-probe result in {run / 'linear_probe'}" in capsys.readouterr().out
    assert main(["linear-probe", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method,backbone", [("dae", "resnet18"), ("mae", "vit_tiny_patch16_224")])
def test_cli_reconstruction_methods_end_to_end(npz_gray, tmp_path, capsys, method, backbone):
    run = tmp_path / method
    args = ["pretrain", "--method", method, "--backbone", backbone, "--data", str(npz_gray), "--out", str(run),
            "--image-size", "16", "--batch-size", "12", "--epochs", "1", "--probe-epochs", "2", "--no-progress"]
    assert main(args) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert {"linear_probe", "linear_probe_random_init"} <= set(m["eval"]) and m["config"]["method"] == method
    assert (run / "reconstructions.png").stat().st_size > 1000  # every mae/dae run ends with a grid
    report = (run / "report.md").read_text()
    assert "![reconstructions](reconstructions.png)" in report
    # what was trained, and how, so two runs' reports can be told apart
    t = m["train"]
    assert f"- **method:** {method} (" in report and f"- **augmentation:** {m['config']['augment']}" in report
    assert (f"- **training:** {t['steps']} steps ({t['epochs']} epochs) of 12 images, {t['seconds']} s, final loss "
            f"{t['final_loss']}") in report
    grid = tmp_path / "grid.png"
    assert main(["reconstruct", "--checkpoint", str(run), "--out", str(grid), "--n", "4"]) == 0
    assert grid.stat().st_size > 1000 and "wrote" in capsys.readouterr().out
    assert main(["reconstruct", "--checkpoint", str(run / "checkpoint.pt"), "--n", "2", "--split", "train"]) == 0
    assert (run / "reconstructions_train_2.png").stat().st_size > 1000  # default: beside the checkpoint
    assert main(["reconstruct", "--checkpoint", str(run), "--n", "2", "--split", "train"]) == 0  # its own: replaced
    other = tmp_path / "other.npz"  # other data: its name in the file's, the run's own grid stays
    other.write_bytes(npz_gray.read_bytes())
    assert main(["reconstruct", "--checkpoint", str(run), "--n", "2", "--split", "train", "--data", str(other)]) == 0
    assert (run / "reconstructions_other_train_2.png").is_file()
    curves = (run / "train_curves.png").read_bytes()
    assert main(["reconstruct", "--checkpoint", str(run), "--out", str(run / "train_curves.png")]) == 2
    assert "is a file of the results in" in capsys.readouterr().err
    assert (run / "train_curves.png").read_bytes() == curves
    assert main(["reconstruct", "--checkpoint", str(run), "--out", str(tmp_path / "grid.json")]) == 2
    assert "this command draws an image; give a path ending in .png" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["reconstruct", "--checkpoint", str(run), "--n", "20"]) == 0
    assert "note: the test split has 9 images: drawing 9, not 20" in capsys.readouterr().out
    rgb = tmp_path / "rgb_train_only.npz"
    np.savez(rgb, train_images=np.full((3, 16, 16, 3), 90, np.uint8))
    assert main(["reconstruct", "--checkpoint", str(run), "--data", str(rgb), "--n", "2"]) == 0
    said = capsys.readouterr().out
    assert f"note: {rgb} has no test split: drawing from train" in said and "converted" in said


def test_reconstruct_refuses_a_method_that_does_not_reconstruct(npz_rgb_noval, tmp_path, capsys):
    pretrain(make_config(data=str(npz_rgb_noval), out=str(tmp_path / "s"), max_steps=1, **FAST))
    assert main(["reconstruct", "--checkpoint", str(tmp_path / "s"), "--out", str(tmp_path / "g.png")]) == 2
    assert "reconstruct works for mae and dae" in capsys.readouterr().err


def test_channels_last_is_for_conv_nets_and_changes_no_values():
    """Conv backbones train in channels-last (faster on oneDNN and cuDNN); the loss and every gradient match the
    default layout's, and a ViT is left alone."""
    cfg = make_config("simclr_quickstart", image_size=16)
    torch.manual_seed(0)
    views = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    results = []
    for channels_last in (False, True):
        model = runs.build_model(cfg, 3)
        if channels_last:
            model = runs.to_channels_last(model)
            inputs = [v.contiguous(memory_format=torch.channels_last) for v in views]
        else:
            inputs = views
        loss = model(inputs)["loss"]
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
        if channels_last:
            conv = model.backbone.conv1.weight
            assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], atol=1e-5, rtol=1e-4, msg=name)
    vit = runs.build_model(make_config("mae_quickstart", image_size=16, patch_size=4), 3)
    assert runs.use_channels_last(model) and not runs.use_channels_last(vit)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_optimizer_steps_match_torch_reference(optimizer):
    """build_optimizer's choice of kernel (fused Adam(W) on CPU) takes the same steps as torch's plain loop."""
    from vissl_lite.train import build_optimizer, optimizer_kwargs

    cfg = make_config("simclr_quickstart", image_size=16, optimizer=optimizer, lr=0.01, weight_decay=0.05)
    models = [runs.build_model(cfg, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    assert optimizer_kwargs(models[0], cfg) == ({"fused": True} if optimizer == "adamw" else {"momentum": 0.9})
    ours = build_optimizer(models[0], cfg)
    reference = build_optimizer(models[1], cfg)
    for group in reference.param_groups:  # same grouping (no decay on norms and biases), plain kernel
        if "fused" in group:
            group["fused"] = False
        group["foreach"] = False
    torch.manual_seed(0)
    batches = [[torch.randn(8, 3, 16, 16) for _ in range(2)] for _ in range(3)]
    for steps in (1, 3):  # one step must agree to float precision; Adam's 1/sqrt(v) amplifies it on later steps
        for model, opt in ((models[0], ours), (models[1], reference)):
            for views in batches[:steps] if steps == 1 else batches[1:]:
                opt.zero_grad()
                model(views)["loss"].backward()
                opt.step()
        pairs = list(zip(models[0].parameters(), models[1].parameters()))
        if steps == 1:
            for a, b in pairs:
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        else:  # all but a handful of near-zero-gradient elements still agree
            off = sum(int(((a - b).abs() > 1e-5).sum()) for a, b in pairs)
            assert off / sum(a.numel() for a, _ in pairs) < 1e-4


def test_a_run_shorter_than_its_warmup_says_so(npz_gray, tmp_path, capsys):
    base = dict(data=str(npz_gray), image_size=16, batch_size=12, max_steps=1, probe=False, progress=False)
    pretrain(make_config(**base, out=str(tmp_path / "a"), warmup_epochs=1))  # 3 steps per epoch, 1 run
    out = capsys.readouterr().out
    assert "1 step of 12" in out
    assert ("note: --warmup-epochs 1 is 3 steps here, longer than the run (1 step), so warm-up takes the whole run: "
            "the learning rate ramps up to --lr") in out
    pretrain(make_config(**base | {"max_steps": 3}, out=str(tmp_path / "b"), warmup_epochs=0.5))
    assert "warmup" not in capsys.readouterr().out


_HEAP_CHECK = """
import resource, sys, torch
from vissl_lite import runs

def faults_refilling(n_bytes):  # minor page faults of filling a tensor after one of the same size was freed
    torch.ones(n_bytes // 4).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(n_bytes // 4).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

size = 64 * 2**20  # above glibc's largest mmap threshold: mmap-ed by default
counts = [faults_refilling(size)]
with runs.keep_freed_memory(torch.device("cpu")) as kept:
    counts.append(faults_refilling(size))
counts.append(faults_refilling(4 * size))  # larger than any block the heap kept: back to the OS on free
print(kept, *counts)
"""


@pytest.mark.skipif(runs._glibc() is None, reason="glibc's mallopt: Linux with glibc only")
def test_keep_freed_memory_reuses_pages_of_freed_tensors_and_restores_on_exit(monkeypatch):
    """In a fresh process (glibc's allocator as it starts): a freed 64 MB tensor's pages are faulted in again when
    the next one is filled by default, reused inside the context, and large blocks are mapped afresh after it."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "VISSL_LITE_KEEP_FREED_MEMORY"}
    out = subprocess.run([sys.executable, "-c", _HEAP_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kept, default, inside, after = out.stdout.split()[-4:]
    pages = 64 * 2**20 // 4096
    assert kept == "True"
    assert int(default) > pages // 2  # every large tensor faulted in anew
    assert int(inside) < pages // 20  # the freed pages are reused
    assert int(after) > 4 * pages // 2  # big freed blocks go back to the OS again (mmap, or the trim threshold)
    # off: another device, an opt-out, a user's own glibc tuning
    for k in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(k)
    with runs.keep_freed_memory(torch.device("meta")) as kept:
        assert not kept
    monkeypatch.setenv("VISSL_LITE_KEEP_FREED_MEMORY", "0")
    with runs.keep_freed_memory(torch.device("cpu")) as kept:
        assert not kept
    monkeypatch.delenv("VISSL_LITE_KEEP_FREED_MEMORY")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    with runs.keep_freed_memory(torch.device("cpu")) as kept:
        assert not kept
