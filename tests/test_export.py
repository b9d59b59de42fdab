"""Export: backbone weights as safetensors that timm.create_model(pretrained=True, pretrained_cfg_overlay=...)
loads, giving the same features as the run's own backbone."""

import json
import textwrap

import pytest
import timm
import torch
from safetensors import safe_open

from vissl_lite import export, runs
from vissl_lite.augment import default_stats
from vissl_lite.cli import main
from vissl_lite.config import make_config
from vissl_lite.pretraining import pretrain


@pytest.mark.parametrize("overrides", [
    dict(backbone="resnet18", small_input=False, in_chans=1),  # grayscale ResNet
    dict(method="mae", augment="crop_flip", backbone="vit_tiny_patch16_224",
         method_args={"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}),  # ViT, patch 4 at 16 px
])
def test_export_round_trip_through_timm(npz_gray, tmp_path, overrides, capsys):
    run = tmp_path / "run"
    pretrain(make_config(data=str(npz_gray), out=str(run), image_size=16, batch_size=12, max_steps=2, probe=False,
                         progress=False, **overrides))
    out = tmp_path / "backbone.safetensors"
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert main(["export", "--checkpoint", str(run)]) == 0  # default: into the run folder, not the working dir
    assert f"wrote {run / 'backbone.safetensors'}" in capsys.readouterr().out
    from safetensors.torch import load_file

    a, b = load_file(str(run / "backbone.safetensors")), load_file(str(out))
    assert a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())
    snap = run / "checkpoint-00000002.pt"  # another checkpoint file in the folder gets its own default name
    snap.write_bytes((run / "checkpoint.pt").read_bytes())
    assert main(["export", "--checkpoint", str(snap)]) == 0
    assert (run / "checkpoint-00000002.backbone.safetensors").is_file()
    assert "timm.create_model" in printed
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert not any(k.startswith(("projector", "decoder")) for k in f.keys())
    kwargs = json.loads(meta["timm_kwargs"])
    cfg, trained, _ = runs.load_run(run)
    mean, std = default_stats(kwargs["in_chans"], cfg.mean, cfg.std)  # what the run normalised with
    assert json.loads(meta["mean"]) == list(mean) and json.loads(meta["std"]) == list(std)
    assert f"mean={tuple(round(m, 4) for m in mean)}" in printed  # the printed call hands them to timm
    code = printed.split("Load it with timm:\n")[1].split("\ntimm.data")[0]
    scope: dict = {}
    exec(textwrap.dedent(code), scope)  # the printed call, as a user pastes it
    model = scope["model"].eval()
    data_cfg = timm.data.resolve_model_data_config(model)
    assert data_cfg["mean"] == tuple(round(m, 4) for m in mean) and data_cfg["crop_pct"] == 1.0
    assert data_cfg["input_size"] == (kwargs["in_chans"], 16, 16) and data_cfg["interpolation"] == "bilinear"
    assert meta["window"] == "n/a (8-bit array data)" and "--window" not in printed  # npz: no window applies
    x = torch.randn(4, kwargs["in_chans"], 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), trained.eval().embed(x), atol=1e-5)


def test_small_input_resnet_export_says_how_to_load(npz_gray, tmp_path, capsys):
    from vissl_lite.backbones import create_backbone, load_weights_file

    run = tmp_path / "run"
    pretrain(make_config(data=str(npz_gray), out=str(run), image_size=16, batch_size=12, max_steps=1, probe=False,
                         progress=False, small_input=True))
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "b.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert "small-input" in printed and "create_backbone('resnet18', in_chans=1, img_size=16, small_input=True)" \
        in printed
    model = create_backbone("resnet18", in_chans=1, img_size=16, small_input=True)
    assert not load_weights_file(model, tmp_path / "b.safetensors")["missing"]
    for bad in ("checkpoint.pt", "model.pth"):  # a typo must not replace the run's checkpoint
        before = (run / "checkpoint.pt").read_bytes() if bad == "checkpoint.pt" else None
        assert main(["export", "--checkpoint", str(run), "--out", str(run / bad)]) == 2
        assert f"name it {bad.split('.')[0]}.safetensors" in capsys.readouterr().err
        if before is not None:
            assert (run / "checkpoint.pt").read_bytes() == before
        else:
            assert not (run / bad).exists()
    folder = tmp_path / "exports"
    folder.mkdir()
    assert main(["export", "--checkpoint", str(run), "--out", str(folder)]) == 0
    assert [p.name for p in folder.iterdir()] == ["backbone.safetensors"]  # no temporary left beside it
    new = tmp_path / "new" / "exports"  # a folder that does not exist yet, written as one with a trailing '/'
    assert main(["export", "--checkpoint", str(run), "--out", f"{new}/"]) == 0
    assert [p.name for p in new.iterdir()] == ["backbone.safetensors"]
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "plain")]) == 2  # no '/': a file name
    assert "name it plain.safetensors" in capsys.readouterr().err
    _, trained, _ = runs.load_run(run)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), trained.eval().embed(x), atol=1e-5)


class _Payload:  # any class: loading it needs arbitrary unpickling
    pass


def test_unsafe_or_corrupt_checkpoints_are_refused(tmp_path):
    torch.save({"model": {}, "step": 0, "config": {}, "extra": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(RuntimeError, match="(?s)evil.pt.*arbitrary unpickling"):
        runs.load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(RuntimeError, match="broken.pt"):
        runs.load_checkpoint(tmp_path / "broken.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="not a vissl-lite checkpoint"):
        runs.load_checkpoint(tmp_path / "other.pt")


# an OSError from the file, or torch's own report of a full disk
@pytest.mark.parametrize("error", [OSError("disk full"), RuntimeError("[enforce fail] unexpected pos 64 vs 32")])
def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(npz_gray, tmp_path, monkeypatch, error):
    run = tmp_path / "run"
    pretrain(make_config(data=str(npz_gray), out=str(run), backbone="test_resnet", image_size=16, batch_size=12,
                         max_steps=2, probe=False, progress=False))
    before = (run / "checkpoint.pt").read_bytes()
    _, model, _ = runs.load_run(run)
    cfg = runs.load_run(run)[0]

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(runs.CheckpointError, match=r"checkpoint.pt .*unchanged. Is the disk full"):
        runs.save_checkpoint(run / "checkpoint.pt", model, None, 3, cfg)
    assert (run / "checkpoint.pt").read_bytes() == before and not list(run.glob(".*tmp"))


def test_timm_kwargs_only_give_up_on_the_small_resnet_stem():
    assert export.timm_kwargs(make_config(backbone="resnet18", image_size=32, small_input=True), 3) is None
    assert export.timm_kwargs(make_config(backbone="convnext_atto", image_size=32), 1) == {"in_chans": 1}
    assert export.timm_kwargs(make_config(backbone="vit_tiny_patch16_224", image_size=32, small_input=None), 3) == {
        "in_chans": 3, "patch_size": 4, "img_size": 32}


def test_export_of_a_folder_run_carries_its_window(png_tree, tmp_path, capsys):
    run = tmp_path / "run"
    pretrain(make_config(data=str(png_tree), out=str(run), image_size=16, batch_size=8, max_steps=1, probe=False,
                         progress=False, window="0,4095"))
    assert main(["export", "--checkpoint", str(run)]) == 0
    out = capsys.readouterr().out
    assert "to 0-255 with --window 0,4095 (DICOM in modality values" in out and "map new images the same way" in out
    with safe_open(str(run / "backbone.safetensors"), "pt") as f:
        assert f.metadata()["window"] == "0,4095"
