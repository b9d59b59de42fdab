"""Fine-tuning: optimisation, selection on validation, layer decay, initialisations, multi-label, reports."""

import json

import numpy as np
import pytest
import torch
import yaml

from vissl_lite import runs
from vissl_lite.backbones import create_backbone, describe_load, load_weights_file
from vissl_lite.cli import main
from vissl_lite.config import ConfigError, load_recipe, make_config
from vissl_lite.eval.finetune import build_optimizer, finetune, finetune_config, predict, schedule_lengths
from vissl_lite.methods import Classifier
from vissl_lite.pretraining import pretrain

FT = dict(image_size=16, batch_size=12, epochs=3, min_steps=0, progress=False, log_every=1, warmup_epochs=1)


@pytest.fixture
def gray_run(npz_gray, tmp_path):
    run = tmp_path / "run"
    pretrain(make_config(data=str(npz_gray), out=str(run), image_size=16, batch_size=12, max_steps=2, probe=False,
                         progress=False))
    return run


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_finetune_lowers_the_loss_and_keeps_the_best_weights_on_val(gray_run, tmp_path):
    m = finetune(gray_run, out=tmp_path / "ft", baseline=False, **FT | {"epochs": 6, "lr": 2e-3})
    sub = tmp_path / "ft" / "checkpoint" / "100pct" / "seed0"
    log = _log(sub / "metrics.jsonl")
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]
    vals = [(r["step"], r["val_top1"]) for r in log if "val_top1" in r]
    assert len(vals) == 6  # one check per epoch
    best_step, best_val = max(vals, key=lambda v: (v[1], -v[0]))  # the first of the best
    result = json.loads((sub / "result.json").read_text())
    assert result["best_step"] == best_step and result["val_top1"] == pytest.approx(best_val, abs=1e-3)
    # the saved model is the selected one: its val and test scores are those reported
    cfg, model, ckpt = runs.load_run(sub)
    assert ckpt["step"] == best_step and isinstance(model, Classifier)
    splits = {s: __import__("vissl_lite.data", fromlist=["load_split"]).load_split(cfg.data, s, 16, 1)
              for s in ("val", "test")}
    logits, y = predict(model, splits["val"], cfg, torch.device("cpu"))
    assert (logits.argmax(1) == y).float().mean().item() * 100 == pytest.approx(best_val, abs=1e-3)
    logits, y = predict(model, splits["test"], cfg, torch.device("cpu"))
    assert (logits.argmax(1) == y).float().mean().item() * 100 == pytest.approx(m["eval"]["finetune"]["top1"])


def test_selection_ignores_test(gray_run, tmp_path, monkeypatch):
    """Corrupting the test labels changes the reported number but not which weights were chosen."""
    from vissl_lite.eval import finetune as ft_mod

    first = finetune(gray_run, out=tmp_path / "a", baseline=False, **FT)
    real = ft_mod.load_eval_splits

    def flipped(*args, **kwargs):
        splits = real(*args, **kwargs)
        splits["test"].labels = (splits["test"].labels + 1) % 3
        return splits

    monkeypatch.setattr(ft_mod, "load_eval_splits", flipped)
    second = finetune(gray_run, out=tmp_path / "b", baseline=False, **FT)
    a, b = first["eval"]["finetune"], second["eval"]["finetune"]
    assert a["per_seed"][0]["best_step"] == b["per_seed"][0]["best_step"] and a["val_top1"] == b["val_top1"]
    assert a["top1"] != b["top1"]


def test_seeds_reproduce_and_resume_reuses_finished_runs(gray_run, tmp_path, capsys):
    kw = dict(out=tmp_path / "ft", label_fraction=[0.5, 1.0], seeds=2, **FT)
    m1 = finetune(gray_run, **kw)
    rows = m1["eval"]["table"]
    assert {(r["init"], r["regime"]) for r in rows} == {(i, g) for i in ("checkpoint", "scratch")
                                                        for g in ("50%", "100%")}
    assert all(r["seeds"] == 2 and len(r["values"]) == 2 for r in rows)
    assert m1["eval"]["by_regime"]["50%"]["finetune"]["n_train"] == [18, 18]
    with pytest.raises(FileExistsError, match="--resume"):
        finetune(gray_run, **kw)
    redo = tmp_path / "ft" / "scratch" / "50pct" / "seed1"
    before = (tmp_path / "ft" / "checkpoint" / "100pct" / "seed0" / "result.json").stat().st_mtime_ns
    (redo / "result.json").unlink()
    capsys.readouterr()
    m2 = finetune(gray_run, resume=True, **kw)
    said = capsys.readouterr().out  # which sub-runs were reused and which one ran again
    assert said.count("finished earlier: reused from") == 7 and f"reused from {redo}" not in said
    assert (tmp_path / "ft" / "checkpoint" / "100pct" / "seed0" / "result.json").stat().st_mtime_ns == before
    assert m2["eval"]["table"] == rows  # the re-run sub-run reproduces its numbers exactly
    assert (tmp_path / "ft" / "embedding.png").is_file()  # reused sub-runs keep their features
    with pytest.raises(ConfigError, match="other settings.*epochs"):
        finetune(gray_run, resume=True, **kw | {"epochs": 5})
    # how a sub-run is executed (here: compiled) is not what it is; every sub-run is finished, so nothing compiles
    assert finetune(gray_run, resume=True, **kw | {"compile": True})["eval"]["table"] == rows
    # sub-runs are tied to the weights they started from, not to where the run lives: a copy of the run resumes...
    import shutil

    moved = shutil.copytree(gray_run, tmp_path / "moved")
    assert finetune(moved, resume=True, **kw)["eval"]["table"] == rows
    # ...and another pretraining run (same settings, another seed) does not
    other = tmp_path / "other"
    pretrain(make_config(data=runs.load_checkpoint(gray_run)["config"]["data"], out=str(other), image_size=16,
                         batch_size=12, max_steps=2, probe=False, progress=False, seed=1))
    with pytest.raises(ConfigError, match=r"other initial weights \(checkpoint .*run/checkpoint.pt at step 2 then, "
                                          r"checkpoint .*other/checkpoint.pt at step 2 now\)"):
        finetune(other, resume=True, **kw)
    # the same data path with rewritten files is other data
    import os

    data = runs.load_checkpoint(gray_run)["config"]["data"]
    st = os.stat(data)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        with pytest.raises(ConfigError, match=f"the files of --data {data} changed since"):
            finetune(gray_run, resume=True, **kw)
    finally:
        os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_report_has_its_plots(gray_run, tmp_path):
    assert main(["finetune", "--checkpoint", str(gray_run), "--out", str(tmp_path / "ft"), "--label-fraction",
                 "0.5,1", "--epochs", "1", "--min-steps", "4", "--batch-size", "12", "--no-progress"]) == 0
    report = (tmp_path / "ft" / "report.md").read_text()
    for png in ("label_efficiency.png", "confusion_matrix.png", "embedding.png", "finetune_curves.png"):
        assert f"]({png})" in report and (tmp_path / "ft" / png).stat().st_size > 5000
    assert "| fine-tune | random init (scratch) | 50% |" in report and "Protocols" in report


def test_finetune_curves_show_a_sub_run_that_logged_one_point(tmp_path):
    import matplotlib.image

    from vissl_lite.eval.report import plot_finetune_curves

    log = tmp_path / "one.jsonl"
    log.write_text(json.dumps({"step": 1, "loss": 0.7, "val_top1": 50.0}) + "\n")
    png = plot_finetune_curves({"ssl 1%": log}, tmp_path / "c.png")
    img = matplotlib.image.imread(png)[..., :3]
    c0 = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's first colour, the one sub-run's
    hits = np.abs(img - c0).max(-1) < 0.05
    assert hits[:, : img.shape[1] // 2].sum() > 5  # the loss panel (no legend there) draws its single point


def test_evaluation_on_other_data_lands_beside_the_runs_own(gray_run, tmp_path, capsys):
    """linear-probe/knn on --data other than the run's own default to RUN/<command>_<data name>: the result on the
    run's own data is kept, not silently replaced."""
    import shutil

    own = gray_run / "linear_probe" / "metrics.json"
    assert main(["linear-probe", "--checkpoint", str(gray_run), "--probe-epochs", "2", "--no-progress"]) == 0
    before = own.read_bytes()
    other = tmp_path / "other" / "second.npz"
    other.parent.mkdir()
    shutil.copy(json.loads(own.read_text())["config"]["data"], other)
    for command in ("linear-probe", "knn"):
        assert main([command, "--checkpoint", str(gray_run), "--data", str(other), "--probe-epochs", "2",
                     "--no-progress"] if command == "linear-probe" else
                    [command, "--checkpoint", str(gray_run), "--data", str(other), "--no-progress"]) == 0
        folder = gray_run / f"{command.replace('-', '_')}_second"
        m = json.loads((folder / "metrics.json").read_text())
        assert m["command"] == command and m["config"]["data"] == str(other)
        assert f"-> {folder}" in capsys.readouterr().out
    assert own.read_bytes() == before
    # the run's own data spelled another way is the run's own; other data of the same name gets its own folder
    data = json.loads(own.read_text())["config"]["data"]
    assert main(["linear-probe", "--checkpoint", str(gray_run), "--data", f"npz:{data}", "--probe-epochs", "2",
                 "--no-progress"]) == 0
    assert f"-> {gray_run / 'linear_probe'}\n" in capsys.readouterr().out
    namesake = tmp_path / "elsewhere" / "second.npz"
    namesake.parent.mkdir()
    shutil.copy(other, namesake)
    assert main(["linear-probe", "--checkpoint", str(gray_run), "--data", str(namesake), "--probe-epochs", "2",
                 "--no-progress"]) == 0
    (folder,) = [f for f in gray_run.glob("linear_probe_second-*")]
    assert json.loads((folder / "metrics.json").read_text())["config"]["data"] == str(namesake)
    assert json.loads((gray_run / "linear_probe_second" / "metrics.json").read_text())["config"]["data"] == str(other)


def test_linear_probe_and_knn_reports(gray_run):
    assert main(["linear-probe", "--checkpoint", str(gray_run), "--label-fraction", "0.5,1", "--seeds", "2",
                 "--probe-epochs", "3", "--no-progress"]) == 0
    report = (gray_run / "linear_probe" / "report.md").read_text()
    for png in ("label_efficiency.png", "confusion_matrix.png", "embedding.png"):
        assert f"]({png})" in report
    assert "](../train_curves.png)" in report
    m = json.loads((gray_run / "linear_probe" / "metrics.json").read_text())["eval"]
    assert {(r["init"], r["regime"]) for r in m["table"]} == {(i, g) for i in ("ssl", "random_init")
                                                             for g in ("50%", "100%")}
    # one regime now: the earlier label-efficiency plot goes with the report that showed it
    assert main(["linear-probe", "--checkpoint", str(gray_run), "--probe-epochs", "3", "--no-progress"]) == 0
    assert not (gray_run / "linear_probe" / "label_efficiency.png").exists()
    assert "label_efficiency.png" not in (gray_run / "linear_probe" / "report.md").read_text()
    assert (gray_run / "linear_probe" / "confusion_matrix.png").is_file()
    # a picture of the same name that no report here linked is not the report's to remove
    (gray_run / "linear_probe" / "report.md").write_text("a report that links no picture\n")
    (gray_run / "linear_probe" / "finetune_curves.png").write_bytes(b"someone else's picture")
    assert main(["linear-probe", "--checkpoint", str(gray_run), "--probe-epochs", "3", "--no-progress"]) == 0
    assert (gray_run / "linear_probe" / "finetune_curves.png").read_bytes() == b"someone else's picture"
    assert main(["knn", "--checkpoint", str(gray_run), "--labels-per-class", "2,4", "--seeds", "2", "--knn-k", "3",
                 "--no-progress"]) == 0
    rows = json.loads((gray_run / "knn" / "metrics.json").read_text())["eval"]["table"]
    assert {(r["protocol"], r["regime"], r["n_train"]) for r in rows} == {("knn k=3", "2/class", 6),
                                                                         ("knn k=3", "4/class", 12)}
    assert all(len(r["values"]) == 2 for r in rows)
    assert not any("auroc_mean" in r for r in rows)  # this test split holds one class: AUROC is undefined, not 0
    assert (gray_run / "knn" / "label_efficiency.png").is_file()


def test_multilabel_finetune_reports_auroc(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (48, 16, 16), dtype=np.uint8)
    y = np.random.default_rng(1).integers(0, 2, (48, 3))  # ChestMNIST-style (N, K) 0/1 labels
    x[y[:, 0] == 1, :8] = 255
    np.savez(tmp_path / "ml.npz", train_images=x, train_labels=y, val_images=x[:16], val_labels=y[:16],
             test_images=x[-16:], test_labels=y[-16:])
    m = finetune(init="scratch", data=str(tmp_path / "ml.npz"), out=tmp_path / "ft", **FT | {"epochs": 8})
    r = m["eval"]["finetune"]
    assert set(r["metrics"]) >= {"auroc_per_label", "ap_per_label", "auroc_mean", "map"}
    assert r["metrics"]["auroc_per_label"][0] > 80 and "val_auroc_mean" in r
    assert m["eval"]["table"][0]["metric"] == "auroc_mean"
    report = (tmp_path / "ft" / "report.md").read_text()
    assert "Per-label test AUROC" in report and "test mean AUROC" in report


@pytest.mark.parametrize("pool", ["token", "avg", "map"])
def test_layer_decay_scales_follow_depth(pool):
    # MAE's scales whatever sits after the blocks: norm (token pooling), fc_norm (avg) or an attention pool (map);
    # timm's own grouping gives fc_norm and attn_pool a layer of their own, one factor above the last block
    backbone = create_backbone("vit_tiny_patch16_224", img_size=16, patch_size=4, global_pool=pool)
    model = Classifier(backbone, num_classes=3)
    cfg = make_config(backbone="vit_tiny_patch16_224", image_size=16, method="classifier", augment="crop_flip",
                      method_args={"num_classes": 3}, lr=1e-3, weight_decay=0.05)
    opt = build_optimizer(model, cfg, 0.5)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    depth = len(backbone.blocks)
    after_blocks = [p for n, p in backbone.named_parameters() if n.split(".")[0] in ("norm", "fc_norm", "attn_pool")]
    assert after_blocks and all(scale[id(p)] == 1.0 for p in after_blocks)  # with the head, as in MAE
    assert scale[id(model.head.weight)] == 1.0
    assert scale[id(backbone.blocks[-1].mlp.fc1.weight)] == pytest.approx(0.5)
    assert scale[id(backbone.blocks[0].mlp.fc1.weight)] == pytest.approx(0.5 ** depth)
    assert scale[id(backbone.patch_embed.proj.weight)] == pytest.approx(0.5 ** (depth + 1))
    assert scale[id(backbone.pos_embed)] == pytest.approx(0.5 ** (depth + 1))
    assert wd[id(backbone.blocks[0].norm1.weight)] == 0 and wd[id(backbone.pos_embed)] == 0
    assert wd[id(backbone.blocks[0].mlp.fc1.weight)] == 0.05 and wd[id(backbone.blocks[0].mlp.fc1.bias)] == 0
    assert wd[id(model.head.weight)] == 0.05 and wd[id(model.head.bias)] == 0
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # every parameter once


def test_layer_decay_on_a_resnet_uses_timm_grouping_shifted_below_the_head():
    model = Classifier(create_backbone("resnet18", img_size=16), num_classes=3)
    cfg = make_config(method="classifier", augment="crop_flip", method_args={"num_classes": 3})
    opt = build_optimizer(model, cfg, 0.5)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert scale[id(model.head.weight)] == 1.0
    assert scale[id(model.backbone.layer4[-1].conv2.weight)] == pytest.approx(0.5)
    assert scale[id(model.backbone.conv1.weight)] < scale[id(model.backbone.layer1[0].conv1.weight)] < 0.5


def test_schedule_lengths_stretch_small_subsets():
    cfg = make_config(method="classifier", augment="crop_flip", epochs=10, min_steps=100, warmup_epochs=1,
                      method_args={"num_classes": 2})
    assert schedule_lengths(37, cfg) == (370, 37)  # full data: epochs rule
    assert schedule_lengths(1, cfg) == (100, 10)  # one batch of labels: min_steps rule, warmup keeps its 10%
    only_steps = make_config(method="classifier", augment="crop_flip", epochs=0, max_steps=7, min_steps=0,
                             warmup_epochs=0, method_args={"num_classes": 2})
    assert schedule_lengths(5, only_steps) == (7, 0)


def test_mixup_classifier_trains_and_multilabel_mixup_is_refused():
    torch.manual_seed(0)
    model = Classifier(create_backbone("resnet18", img_size=16), num_classes=3, mixup=0.8, cutmix=1.0)
    out = model([torch.randn(6, 3, 16, 16)], torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    with pytest.raises(ValueError, match="single-label"):
        Classifier(create_backbone("resnet18", img_size=16), num_classes=3, multilabel=True, mixup=0.8)
    with pytest.raises(ValueError, match="num_classes"):
        Classifier(create_backbone("resnet18", img_size=16))


def test_a_pretraining_method_or_recipe_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="not 'mae'; drop --method$"):
        finetune_config(method="mae")
    with pytest.raises(ConfigError, match=r"not 'dae' \(from --config dae_quickstart, a pretraining recipe\)"):
        finetune_config(recipe="dae_quickstart")


def test_checkpoint_fixes_the_architecture(gray_run):
    with pytest.raises(ConfigError, match="come.*from the checkpoint"):
        finetune_config(gray_run, backbone="resnet34")
    with pytest.raises(ConfigError, match=r"in_chans comes from the checkpoint \(in_chans=1\)"):
        finetune_config(gray_run, in_chans=3)  # the run says 0 ('the data's own'); the message says what that was
    assert finetune_config(gray_run, in_chans=1).in_chans == 1  # and the matching value is no clash
    with pytest.raises(ConfigError, match="classifier"):
        finetune_config(gray_run, method="simclr")
    assert main(["finetune", "--init", "checkpoint", "--no-progress"]) == 2
    assert main(["finetune", "--no-progress"]) == 2  # no starting point: an error, not a silent run from scratch


def test_a_medical_preset_of_the_run_carries_over_to_fine_tuning(npz_gray, tmp_path):
    run = tmp_path / "rad"
    pretrain(make_config(data=str(npz_gray), out=str(run), image_size=16, batch_size=12, max_steps=1, probe=False,
                         progress=False, augment="radiology", augment_args="p_noise=0.9"))
    cfg = finetune_config(run)
    assert cfg.augment == "radiology" and cfg.augment_args == {}  # its own defaults: no left-right flips
    assert finetune_config(run, augment_args="p_blur=0").augment_args == {"p_blur": 0.0}
    photo = finetune_config(run, augment="crop_flip")  # asked for: the recipe's own crop_flip arguments
    assert photo.augment == "crop_flip" and photo.augment_args == load_recipe("finetune")["augment_args"]


def test_weights_file_adapts_channels_and_drops_the_classifier(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = __import__("timm").create_model("resnet18", num_classes=10)  # an "ImageNet" file with its fc
    save_file(source.state_dict(), tmp_path / "r18.safetensors")
    gray = create_backbone("resnet18", in_chans=1, img_size=224)
    info = load_weights_file(gray, tmp_path / "r18.safetensors")
    assert torch.allclose(gray.conv1.weight, source.conv1.weight.sum(1, keepdim=True))  # 3 -> 1 channel: summed
    assert torch.equal(gray.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert not info["missing"] and not info["skipped"]
    save_file(gray.state_dict(), tmp_path / "gray.safetensors")  # 1 -> 3: repeated, divided by 3
    rgb = create_backbone("resnet18", in_chans=3, img_size=224)
    assert not load_weights_file(rgb, tmp_path / "gray.safetensors")["skipped"]
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # a gray image copied to three channels: the features the gray stem gave
        assert torch.allclose(rgb.eval()(x.repeat(1, 3, 1, 1)), gray.eval()(x), atol=1e-5)
    small = create_backbone("resnet18", in_chans=3, img_size=32, small_input=True)
    info = load_weights_file(small, tmp_path / "r18.safetensors")
    assert info["skipped"] == ["conv1.weight (64, 3, 7, 7) vs (64, 3, 3, 3)"]  # said, not silently dropped
    assert "1 skipped (conv1.weight" in describe_load(info) and "not in the file" not in describe_load(info)
    deeper = create_backbone("resnet34", in_chans=3, img_size=32)  # resnet18's file covers its first blocks only
    info = load_weights_file(deeper, tmp_path / "r18.safetensors")
    absent = [k for k in info["missing"] if not k.endswith("num_batches_tracked") and k != "conv1.weight"]
    assert len(absent) > 50 and "layer1.2.conv1.weight" in absent
    assert f", {len(absent)} of the backbone's tensors not in the file (layer1.2.conv1.weight, " in describe_load(info)
    vit = create_backbone("vit_tiny_patch16_224", img_size=32)
    with pytest.raises(ValueError, match="does not fit this backbone"):
        load_weights_file(vit, tmp_path / "r18.safetensors")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        load_weights_file(gray, tmp_path / "bad.pth")


def test_finetune_from_a_weights_file(npz_gray, tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(create_backbone("resnet18", in_chans=3, img_size=16, small_input=False).state_dict(),
              tmp_path / "w.safetensors")
    m = finetune(init_weights=tmp_path / "w.safetensors", data=str(npz_gray), out=tmp_path / "ft",
                 **FT | {"epochs": 1})
    assert m["inits"] == ["weights", "scratch"] and m["initialisation"]["weights"]["loaded"] > 50
    loaded = m["initialisation"]["weights"]["loaded"]
    assert f"--init-weights started from {tmp_path / 'w.safetensors'}: {loaded} tensors loaded\n" in \
        capsys.readouterr().out


def test_continued_pretraining_starts_from_a_weights_file(npz_gray, tmp_path):
    """--init-weights on pretrain: the backbone starts from the file (3-channel stem summed to one channel), then
    SSL continues on the in-domain images; with lr 0 the deep weights are still exactly the file's."""
    from safetensors.torch import save_file

    from vissl_lite.config import ConfigError, make_config
    from vissl_lite.pretraining import pretrain
    from vissl_lite.runs import load_run

    torch.manual_seed(0)
    source = create_backbone("resnet18", in_chans=3, img_size=16, small_input=False).state_dict()
    save_file(source, tmp_path / "w.safetensors")
    run = tmp_path / "cont"
    m = pretrain(make_config(data=str(npz_gray), init_weights=str(tmp_path / "w.safetensors"), small_input=False,
                             image_size=16, batch_size=8, max_steps=1, lr=0.0, probe=False, progress=False,
                             out=str(run)))
    assert m["init_weights"]["loaded"] > 50 and not m["init_weights"]["skipped"]
    _, model, _ = load_run(run)
    own = model.backbone.state_dict()
    assert torch.equal(own["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])
    assert torch.allclose(own["conv1.weight"], source["conv1.weight"].sum(1, keepdim=True))  # 3 -> 1 channel
    with pytest.raises(ConfigError, match="no file at"):
        make_config(init_weights=str(tmp_path / "missing.safetensors"))
    # a resume continues from the checkpoint: other start weights would be ignored without a word
    save_file(source, tmp_path / "other.safetensors")
    resume = dict(data=str(npz_gray), small_input=False, image_size=16, batch_size=8, max_steps=2, lr=0.0,
                  probe=False, progress=False, out=str(run), resume=True)
    with pytest.raises(ConfigError, match=f"started from {tmp_path / 'w.safetensors'}, and a resume continues"):
        pretrain(make_config(init_weights=str(tmp_path / "other.safetensors"), **resume))
    pretrain(make_config(**resume))  # left out: the run keeps its own, in config.yaml too
    assert yaml.safe_load((run / "config.yaml").read_text())["init_weights"] == str(tmp_path / "w.safetensors")


def test_the_protocol_line_states_a_max_steps_cap():
    from vissl_lite.config import make_config
    from vissl_lite.eval.finetune import protocol_text, schedule_lengths

    capped = make_config("finetune", max_steps=30)
    assert schedule_lengths(50, capped)[0] == 30  # 10 epochs of 50 batches, capped
    assert "10 epochs and at least 100 steps, at most 30 steps (--max-steps)" in protocol_text(capped, 0.75)
    assert "at most" not in protocol_text(make_config("finetune"), 0.75)
