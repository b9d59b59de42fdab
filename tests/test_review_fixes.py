"""Regressions for edge cases found in review: each of these failed or misbehaved before its fix."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vissl_lite import runs
from vissl_lite.config import make_config
from vissl_lite.data import DataError, load_split
from vissl_lite.pretraining import pretrain
from vissl_lite.train import NonFiniteLossError

from .conftest import crash_pretrain

FAST = dict(backbone="resnet18", image_size=16, batch_size=8, log_every=2, checkpoint_every=2, progress=False,
            warmup_epochs=0.5, probe=False)


def test_stream_mode_resume_is_exact(png_tree, tmp_path, monkeypatch):
    common = dict(data=str(png_tree), data_mode="stream", num_workers=0, epochs=2, **FAST)  # 24 images: 3 steps
    pretrain(make_config(out=str(tmp_path / "straight"), **common))
    crash_pretrain(monkeypatch, 4, lambda: pretrain(make_config(out=str(tmp_path / "split"), **common)))
    pretrain(make_config(out=str(tmp_path / "split"), resume=True, **common))
    a, b = runs.load_checkpoint(tmp_path / "straight")["model"], runs.load_checkpoint(tmp_path / "split")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_multilabel_data_gets_a_bce_probe_with_auroc_and_no_knn(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (40, 16, 16), dtype=np.uint8)
    y = np.random.default_rng(1).integers(0, 2, (40, 3))  # ChestMNIST-style (N, K) 0/1 labels
    x[y[:, 0] == 1, :8] = 255  # label 0 is visible in the image, so a probe can find it
    np.savez(tmp_path / "ml.npz", train_images=x, train_labels=y, val_images=x[:16], val_labels=y[:16],
             test_images=x[-16:], test_labels=y[-16:])
    m = pretrain(make_config(data=str(tmp_path / "ml.npz"), out=str(tmp_path / "r"), max_steps=2,
                             **FAST | {"probe": True, "probe_epochs": 30}))
    lp = m["eval"]["linear_probe"]
    assert "BCE per label" in lp["protocol"] and len(lp["metrics"]["auroc_per_label"]) == 3
    assert lp["metrics"]["auroc_per_label"][0] > 90 and 0 <= lp["map"] <= 100
    assert "multi-label" in m["eval"]["knn"]["skipped"]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["train"]["steps"] == 2
    report = (tmp_path / "r" / "report.md").read_text()  # the report shows mAP beside the mean AUROC
    assert "test mean AUROC (%) | test mAP (%) |" in report and f"{lp['map']:.2f}" in report


def test_unlabeled_folder_keeps_every_image_for_training(tmp_path):
    for i in range(10):
        Image.fromarray(np.full((12, 12, 3), i * 20, np.uint8)).save(tmp_path / f"{i}.png")
    assert len(load_split(str(tmp_path), "train", 8)) == 10
    with pytest.raises(DataError, match="has no labels"):
        load_split(str(tmp_path), "val", 8)


def test_tiny_classes_still_get_val_and_test_images(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((12, 12, 3), i * 20, np.uint8)).save(tmp_path / c / f"{i}.png")
    sizes = {s: len(load_split(str(tmp_path), s, 8)) for s in ("train", "val", "test")}
    assert sizes == {"train": 6, "val": 2, "test": 2}


def test_folder_channels_look_past_the_first_file(tmp_path):
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "0_gray.png")
    for i in range(1, 6):
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / f"{i}_rgb.png")
    assert load_split(str(tmp_path), "train", 8).channels == 3


def test_nan_gradient_with_finite_loss_is_caught(npz_rgb_noval, tmp_path, monkeypatch):
    real, calls = torch.nn.utils.clip_grad_norm_, {"n": 0}

    def nan_norm(params, max_norm, *args, **kwargs):
        calls["n"] += 1
        norm = real(params, max_norm, *args, **kwargs)
        return norm * float("nan") if calls["n"] == 3 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", nan_norm)
    with pytest.raises(NonFiniteLossError, match="gradient"):
        pretrain(make_config(data=str(npz_rgb_noval), out=str(tmp_path / "n"), max_steps=4, **FAST))
    assert runs.load_checkpoint(tmp_path / "n")["step"] == 2


def test_a_fresh_run_does_not_append_to_a_stale_log(npz_rgb_noval, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"step": 999, "loss": 1.0}) + "\n")
    pretrain(make_config(data=str(npz_rgb_noval), out=str(out), max_steps=2, **FAST))
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [2]


def test_idx_folder_without_train_files_is_a_clear_error(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(12))
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_split(f"idx:{tmp_path}", "train", 8)
