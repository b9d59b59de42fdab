"""Bad input: every case either loads correctly or fails with an error that names the file and the fix."""

import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vissl_lite import runs
from vissl_lite.cli import main
from vissl_lite.config import ConfigError, make_config
from vissl_lite.data import DataError, load_split
from vissl_lite.data.decode import decode_image


def _tree(root, n=6, size=12):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((size, size, 3), 40 if c == "a" else 200, np.uint8)).save(root / c / f"{i}.png")
    return root


def _truncate(path, keep=40):
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_truncated_and_fake_images_error_or_skip(tmp_path, mode):
    root = _tree(tmp_path / "t")
    _truncate(root / "a" / "0.png")
    (root / "b" / "fake.jpg").write_text("this is a text file with an image name")
    (root / "b" / "notes.txt").write_text("not an image: ignored by extension")
    with pytest.raises(DataError, match=r"(0\.png|fake\.jpg).*--on-bad-file skip"):
        data = load_split(str(root), "train", 8, data_mode=mode, progress=False)
        if mode == "stream":  # streaming decodes in the loader: the bad file fails there, named
            [decode_image(f, 8, 3) for f in data.files]
    splits = [load_split(str(root), s, 8, data_mode=mode, progress=False, on_bad_file="skip")
              for s in ("train", "val", "test")]
    skipped = sorted(name.rsplit("/", 1)[-1] for d in splits for name in d.skipped)
    assert skipped == ["0.png", "fake.jpg"]
    assert sum(len(d) for d in splits) == 12 - 1  # 13 image-named files, 2 bad; notes.txt never listed
    for d in splits:
        assert len(d.labels) == len(d.images if d.images is not None else d.files)


def test_skip_also_holds_for_the_reconstruction_grid_and_its_file_goes_where_it_says(tmp_path, capsys, monkeypatch):
    root = tmp_path / "u"  # unlabeled: the grid draws from train, whose first file is the broken one
    root.mkdir()
    for i in range(8):
        Image.fromarray(np.full((12, 12, 3), 30 * i, np.uint8)).save(root / f"{i}.png")
    (root / "0.png").write_text("not a png")
    run = tmp_path / "dae"
    assert main(["pretrain", "--method", "dae", "--data", str(root), "--out", str(run), "--image-size", "16",
                 "--batch-size", "4", "--max-steps", "1", "--no-probe", "--no-progress", "--on-bad-file", "skip"]) == 0
    assert (run / "reconstructions.png").is_file() and (run / "metrics.json").is_file()
    capsys.readouterr()
    assert main(["reconstruct", "--checkpoint", str(run), "--out", str(tmp_path), "--n", "20"]) == 0
    said = capsys.readouterr().out
    grid = tmp_path / "reconstructions_train_7.png"  # named after the split drawn from and the images drawn
    assert grid.is_file() and f"wrote {grid}" in said and "note: note:" not in said
    assert main(["reconstruct", "--checkpoint", str(run), "--out", str(tmp_path / "grid")]) == 0
    assert (tmp_path / "grid.png").is_file() and f"wrote {tmp_path / 'grid.png'}" in capsys.readouterr().out
    # files whose headers pass the listing's check and whose pixels then fail to decode, every one of them: named,
    # not torch.stack's 'expects a non-empty TensorList'
    import vissl_lite.eval.reconstruct as rec

    def undecodable(f, *args):
        raise DataError(f"{f}: pixel data cut short")

    monkeypatch.setattr(rec, "decode_image", undecodable)
    assert main(["reconstruct", "--checkpoint", str(run), "--out", str(tmp_path / "g2")]) == 2
    assert f"no file of the train split of {root} could be decoded (7 tried" in capsys.readouterr().err


def test_skips_in_val_and_test_are_recorded_by_pretrain_and_linear_probe(tmp_path, capsys):
    """Files skipped in the evaluation splits are counted in metrics.json too, not only printed."""
    root = tmp_path / "t"
    for split in ("train", "val", "test"):
        _tree(root / split, n=6)
    _truncate(root / "val" / "a" / "1.png")
    _truncate(root / "test" / "b" / "2.png")
    _truncate(root / "test" / "b" / "4.png")
    run = tmp_path / "r"
    common = ["--no-progress", "--on-bad-file", "skip", "--probe-epochs", "1"]
    assert main(["pretrain", "--data", str(root), "--out", str(run), "--image-size", "8", "--batch-size", "4",
                 "--max-steps", "1", *common]) == 0
    m = json.loads((run / "metrics.json").read_text())["skipped_files"]
    assert m["count"] == 3 and m["by_split"] == {"train": 0, "val": 1, "test": 2}
    assert sorted(Path(f).name for f in m["files"]) == ["1.png", "2.png", "4.png"]
    assert main(["linear-probe", "--checkpoint", str(run), *common]) == 0
    m = json.loads((run / "linear_probe" / "metrics.json").read_text())["skipped_files"]
    assert m["count"] == 3 and m["by_split"] == {"train": 0, "val": 1, "test": 2}
    assert "skipped 2 unreadable test file(s)" in capsys.readouterr().out


def test_skip_is_reported_by_pretrain(tmp_path, capsys):
    root = tmp_path / "t"
    for split in ("train", "val", "test"):  # explicit splits: the bad file is in train for sure
        _tree(root / split, n=6)
    _truncate(root / "train" / "a" / "3.png")
    assert main(["pretrain", "--data", str(root), "--out", str(tmp_path / "r"), "--image-size", "8", "--batch-size",
                 "4", "--max-steps", "1", "--no-probe", "--no-progress", "--on-bad-file", "skip"]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["skipped_files"]["count"] == 1 and m["skipped_files"]["files"][0].endswith("3.png")
    assert m["skipped_files"]["by_split"] == {"train": 1}  # --no-probe: only train was read
    assert m["train"]["train_images"] == 11
    assert "skipped 1 unreadable train file" in capsys.readouterr().out
    assert main(["pretrain", "--data", str(root), "--out", str(tmp_path / "r2"), "--image-size", "8",
                 "--max-steps", "1", "--no-probe", "--no-progress"]) == 2  # default: stop, naming the file
    assert "3.png" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="on_bad_file"):
        make_config(on_bad_file="ignore")


def test_every_file_bad_and_empty_folder(tmp_path):
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="every image"):
        load_split(str(tmp_path / "bad"), "train", 8, on_bad_file="skip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_split(str(tmp_path / "empty"), "train", 8)


def test_palette_alpha_16bit_and_one_channel_files(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((10, 10, 3), 90, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        tmp_path / "pal.png")
    ramp = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)  # 0..59400: needs 16 bits
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    Image.fromarray(np.full((10, 10), 77, np.uint8)).save(tmp_path / "gray.png")
    assert decode_image(tmp_path / "rgba.png", 10, 3)[:, 0, 0].tolist() == [200, 0, 0]
    assert decode_image(tmp_path / "pal.png", 10, 3)[:, 0, 0].tolist() == [90, 90, 90]
    deep = decode_image(tmp_path / "deep.png", 10, 1)[0].flatten().to(torch.int32)
    assert deep.tolist() == sorted(deep.tolist()) and deep[-1] > 200  # order kept, full range used
    assert decode_image(tmp_path / "gray.png", 10, 3).shape == (3, 10, 10)  # one channel -> three on request
    assert decode_image(tmp_path / "rgba.png", 10, 1).shape == (1, 10, 10)  # three -> one on request


def test_small_images_extreme_aspect_ratio_and_exif_rotation(tmp_path):
    Image.fromarray(np.full((4, 4, 3), 50, np.uint8)).save(tmp_path / "tiny.png")
    assert decode_image(tmp_path / "tiny.png", 16, 3).shape == (3, 16, 16)  # smaller than the crop: upsampled
    strip = np.zeros((6, 300, 3), np.uint8)
    strip[:, 149:151] = 255  # a thin white bar at the centre of a 50:1 strip
    Image.fromarray(strip).save(tmp_path / "strip.png")
    out = decode_image(tmp_path / "strip.png", 8, 3)
    assert out.shape == (3, 8, 8) and out[0, 4, 4] > 120 and out[0, 4, 0] < 30  # centre crop keeps the bar
    img = np.zeros((8, 16, 3), np.uint8)
    img[:, :8] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", exif=exif, quality=100)
    (tmp_path / "rot.jpg").write_bytes(buf.getvalue())
    shown = decode_image(tmp_path / "rot.jpg", 8, 1)[0].float()
    assert shown[:4].mean() > 200 and shown[4:].mean() < 50  # after rotation, white is on top


def test_npz_with_wrong_shapes_or_keys_is_named(tmp_path):
    np.savez(tmp_path / "nokeys.npz", images=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError, match="nokeys.npz"):
        load_split(str(tmp_path / "nokeys.npz"), "train", 8)
    np.savez(tmp_path / "shape.npz", train_images=np.zeros((4, 8), np.uint8), train_labels=np.zeros(4))
    with pytest.raises(DataError, match="shape.npz"):
        load_split(str(tmp_path / "shape.npz"), "train", 8)
    np.savez(tmp_path / "count.npz", train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros(3))
    with pytest.raises(DataError, match="count.npz"):
        load_split(str(tmp_path / "count.npz"), "train", 8)
    np.savez(tmp_path / "names.npz", train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"names.npz: 'train_labels' holds <U1 values.*integer class codes"):
        load_split(str(tmp_path / "names.npz"), "train", 8)
    np.savez(tmp_path / "half.npz", train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.array([0.5, 1]))
    with pytest.raises(DataError, match="half.npz: 'train_labels' has non-integer values"):
        load_split(str(tmp_path / "half.npz"), "train", 8)
    with pytest.raises(ConfigError, match="in_chans"):
        make_config(in_chans=2)
    empty = dict(train_images=np.zeros((0, 8, 8), np.uint8), train_labels=np.zeros(0))
    np.savez(tmp_path / "empty.npz", **empty)
    with pytest.raises(DataError, match=r"empty.npz: 'train_images' holds no images \(shape \(0, 8, 8\)\)"):
        load_split(str(tmp_path / "empty.npz"), "train", 8)
    # an empty test split is one the file does not have, and is named as missing (not numpy's zero-size error);
    # unlabeled, nothing is carved for it
    np.savez(tmp_path / "notest.npz", train_images=np.zeros((4, 8, 8), np.uint8),
             test_images=np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"notest.npz has no 'test' split \(it has: train\); add 'test_images'"):
        load_split(str(tmp_path / "notest.npz"), "test", 8)
    # splits whose labels disagree: one-hot train rows against class codes, or a test class train never has
    np.savez(tmp_path / "onehot.npz", train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.eye(2)[[0, 1, 0, 1]],
             test_images=np.zeros((2, 8, 8), np.uint8), test_labels=np.array([[0], [1]]))
    with pytest.raises(DataError, match=r"onehot.npz: 'test_labels' holds class codes, one column, while "
                                        r"'train_labels' holds multi-label, 2 0/1 columns.*labels.argmax\(1\)"):
        load_split(str(tmp_path / "onehot.npz"), "train", 8)
    np.savez(tmp_path / "newclass.npz", train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.arange(4) % 2,
             test_images=np.zeros((2, 8, 8), np.uint8), test_labels=np.array([1, 2]))
    with pytest.raises(DataError, match=r"newclass.npz: the test split has class\(es\) \[2\] that no training"):
        load_split(str(tmp_path / "newclass.npz"), "test", 8)
    np.savez(tmp_path / "float.npz", train_images=np.zeros((4, 8, 8), np.float32), train_labels=np.zeros(4))
    with pytest.raises(DataError, match=r"float\.npz \(train split\).*float32.*astype\('uint8'\)"):
        load_split(str(tmp_path / "float.npz"), "train", 8)
    # a complete zip whose deflate stream is invalid: zlib, not zipfile, notices (an invalid block type)
    np.savez_compressed(tmp_path / "body.npz", train_images=np.zeros((64, 32, 32), np.uint8))
    raw = bytearray((tmp_path / "body.npz").read_bytes())
    entry = zipfile.ZipFile(tmp_path / "body.npz").infolist()[0]
    name_len, extra_len = struct.unpack("<HH", raw[entry.header_offset + 26:entry.header_offset + 30])
    raw[entry.header_offset + 30 + name_len + extra_len] = 0xFF  # BFINAL=1, BTYPE=11: reserved
    (tmp_path / "body.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="body.npz.*re-download") as caught:
        load_split(str(tmp_path / "body.npz"), "train", 8)
    assert isinstance(caught.value.__cause__, zlib.error)


class Unsafe:  # any class: loading it needs arbitrary unpickling
    pass


def test_cli_errors_are_one_line_naming_the_option_or_file(npz_gray, tmp_path, capsys):
    def error(*argv):
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err
        return err

    if not torch.cuda.is_available():
        assert "--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto" in error(
            "pretrain", "--data", str(npz_gray), "--device", "cuda", "--out", str(tmp_path / "c"))
        assert not (tmp_path / "c").exists()
    if not torch.backends.mps.is_available():
        assert "no MPS" in error("linear-probe", "--checkpoint", str(tmp_path), "--device", "mps")
    assert error("transfer", "--data", str(npz_gray), "--pretrain-data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "t")).startswith(f"vissl-lite transfer: error: --pretrain-data {tmp_path / 'nowhere'}")
    # a typo in the fine-tuning overrides stops transfer before any pretraining
    err = error("transfer", "--data", str(npz_gray), "--finetune-args", "epoch=1", "--out", str(tmp_path / "t"))
    assert "--finetune-args: unknown config key 'epoch'; did you mean 'epochs'" in err
    assert "--finetune-args: out cannot be set for fine-tuning alone; give --out" in error(
        "transfer", "--data", str(npz_gray), "--finetune-args", "out=x", "--out", str(tmp_path / "t"))
    assert not (tmp_path / "t").exists()
    # values that would train on nonsense
    assert "p_hflip=2 for 'radiology' is a probability" in error("pretrain", "--augment", "radiology",
                                                                  "--augment-args", "p_hflip=2")
    assert "scale=0.5 for 'simclr' is the crop's share" in error("pretrain", "--augment-args", "scale=0.5")
    # every numeric augmentation argument: checked before any work, not a traceback or a NaN in the loop
    for preset, arg, says in (("radiology", "gamma=0.7", "is the gamma exponent, [min, max] with 0 < min <= max"),
                              ("radiology", "noise=-0.1", "is the Gaussian noise std"),
                              ("radiology", "window=0.6", "0.5 or more can cross the ends"),
                              ("radiology", "degrees=ten", "is the largest rotation, in degrees"),
                              ("pathology", "stain=-2", "is the stain jitter sigma"),
                              ("simclr", "strength=-1", "is the colour-jitter strength"),
                              ("simclr", "ratio=[2,1]", "is the crop's aspect ratio"),
                              ("simclr", "quantize=maybe", "give true or false")):
        out = tmp_path / f"bad_{preset}"
        assert says in error("pretrain", "--augment", preset, "--augment-args", arg, "--out", str(out))
        assert not out.exists()
    assert "batch_size must be >= 2 (got 1)" in error("pretrain", "--batch-size", "1")
    # unlabeled evaluation data is refused before pretraining on it
    (tmp_path / "flat").mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(tmp_path / "flat" / f"{i}.png")
    assert "--data " + str(tmp_path / "flat") + " has no labels, and transfer evaluates on it" in error(
        "transfer", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "t"))
    assert not (tmp_path / "t").exists()
    # the fine-tuning recipe is listed apart from the pretraining ones, and refused by pretrain with the command
    assert "simclr_quickstart (pretraining), finetune (fine-tuning)" in error("pretrain", "--config", "nope")
    assert "use 'vissl-lite finetune'" in error("pretrain", "--config", "finetune", "--out", str(tmp_path / "f"))
    assert not (tmp_path / "f").exists()
    # what only the pretraining run completes (a medical preset's own augment_args) is not judged up front: this
    # gets as far as looking for the checkpoint, whose config decides the fine-tuning augmentation
    from vissl_lite.eval.transfer import transfer

    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        transfer(str(npz_gray), checkpoint=str(tmp_path / "none"), out=str(tmp_path / "t2"),
                 finetune_args={"augment_args": {"p_hflip": 0.0}})
    # a checkpoint cut short: one line naming it and the snapshots to fall back on
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}, "step": 4, "config": {}}, run / "checkpoint-4.pt")
    (run / "checkpoint.pt").write_bytes((run / "checkpoint-4.pt").read_bytes()[:200])
    for argv in (["linear-probe", "--checkpoint", str(run)], ["export", "--checkpoint", str(run)],
                 ["pretrain", "--data", str(npz_gray), "--batch-size", "8", "--out", str(run), "--resume"]):
        err = error(*argv)
        assert "is corrupt or cut short" in err and "checkpoint-4.pt" in err and len(err.splitlines()) == 1, err
    # the newest snapshot is a hard link to checkpoint.pt (the same bytes): not offered as the way out
    (run / "checkpoint-4.pt").unlink()
    (run / "checkpoint-4.pt").hardlink_to(run / "checkpoint.pt")
    err = error("export", "--checkpoint", str(run))
    assert "snapshots" not in err and "Without a step snapshot (--keep-checkpoints) train again" in err
    # an unsafe pickle: torch's multi-line refusal still makes one line
    torch.save({"model": {}, "step": 0, "config": {}, "extra": Unsafe()}, run / "checkpoint.pt")
    err = error("export", "--checkpoint", str(run))
    assert "arbitrary unpickling" in err and len(err.splitlines()) == 1, err


def test_truncated_jpeg_is_caught_before_streaming(tmp_path):
    root = _tree(tmp_path / "t", n=4, size=32)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "a" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # header intact, data cut
    data = load_split(str(root), "train", 8, data_mode="stream", progress=False, on_bad_file="skip")
    assert [p.rsplit("/", 1)[-1] for p in data.skipped] == ["cut.jpg"]
    assert all(decode_image(f, 8, 3).shape == (3, 8, 8) for f in data.files)


def test_a_split_carved_empty_is_empty_not_a_crash(tmp_path, capsys):
    root = _tree(tmp_path / "t", n=2)  # 2 per class: test takes one of each, nothing is left for val
    assert len(load_split(str(root), "val", 8, progress=False)) == 0
    assert main(["pretrain", "--data", str(root), "--out", str(tmp_path / "r"), "--image-size", "8", "--batch-size",
                 "2", "--max-steps", "1", "--no-progress"]) == 0
    assert "evaluation skipped" in capsys.readouterr().out


def test_a_bad_file_met_by_streaming_workers_stops_the_run_in_one_line(png_tree, tmp_path):
    """In --data-mode stream nothing decodes a file before a worker does: the worker's failure must reach the user
    as the one-line DataError naming the file, and the process must exit (persistent workers once kept it alive)."""
    good = next((png_tree / "class_0").glob("*.png")).read_bytes()
    (png_tree / "class_0" / "zz_truncated.png").write_bytes(good[: len(good) // 2])
    cmd = [sys.executable, "-m", "vissl_lite.cli", "pretrain", "--data", str(png_tree), "--data-mode", "stream",
           "--num-workers", "2", "--no-probe", "--image-size", "16", "--batch-size", "8", "--epochs", "2",
           "--no-progress", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "worker" not in done.stderr
    assert "error: cannot decode image" in done.stderr and "zz_truncated.png" in done.stderr


def test_unlabeled_pretraining_data_points_at_a_later_probe_not_at_its_own_data_flag(tmp_path, capsys):
    np.savez(tmp_path / "u.npz", train_images=np.random.default_rng(0).integers(0, 255, (24, 8, 8), np.uint8))
    run = tmp_path / "r"
    assert main(["pretrain", "--data", str(tmp_path / "u.npz"), "--out", str(run), "--image-size", "8",
                 "--batch-size", "12", "--max-steps", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "has no labels" in out and "pass labeled data with --data" not in out  # that would change what it trains on
    assert f"Evaluate later with 'vissl-lite linear-probe --checkpoint {run} --data LABELED_DATA'" in out
    assert main(["linear-probe", "--checkpoint", str(run)]) == 2
    assert "pass labeled data with --data" in capsys.readouterr().err  # there, --data is the evaluation data


def test_an_output_folder_that_cannot_be_made_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    assert main(["pretrain", "--out", str(tmp_path / "file" / "run"), "--max-steps", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "vissl-lite pretrain: error:" in err and "file" in err and "Traceback" not in err


def test_no_command_overwrites_another_commands_results(npz_gray, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(npz_gray), "--out", str(run), "--image-size", "16", "--batch-size", "12",
                 "--max-steps", "1", "--no-progress"]) == 0
    kept = {f: (run / f).read_bytes() for f in ("metrics.json", "report.md")}
    capsys.readouterr()
    for command in ("knn", "linear-probe"):  # into the pretraining run itself
        assert main([command, "--checkpoint", str(run), "--out", str(run), "--no-progress"]) == 2
        assert f"--out {run} is a pretraining run (it holds checkpoint.pt)" in capsys.readouterr().err
    probe = tmp_path / "probe"
    assert main(["knn", "--checkpoint", str(run), "--out", str(probe), "--no-progress"]) == 0
    assert main(["knn", "--checkpoint", str(run), "--out", str(probe), "--no-progress"]) == 0  # a re-run replaces
    assert main(["linear-probe", "--checkpoint", str(run), "--out", str(probe), "--no-progress"]) == 2
    assert f"--out {probe} already holds a 'knn' result" in capsys.readouterr().err
    # a fresh pretraining into a results folder with no checkpoint to continue
    assert main(["pretrain", "--data", str(npz_gray), "--out", str(probe), "--image-size", "16", "--max-steps", "1",
                 "--no-progress"]) == 2
    assert f"{probe} already holds results (metrics.json) and no checkpoint" in capsys.readouterr().err
    assert {f: (run / f).read_bytes() for f in kept} == kept
    # a results folder is not an image folder (its plots would be read as the data)
    for folder in (run, probe):
        assert main(["pretrain", "--data", str(folder), "--out", str(tmp_path / "new"), "--no-progress"]) == 2
        assert f"--data {folder} is a vissl-lite results folder, not images" in capsys.readouterr().err
    # resuming a finished run whose checkpoint is gone: not 'start it again without --resume' (that is refused too)
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "metrics.json").write_bytes((run / "metrics.json").read_bytes())
    assert main(["pretrain", "--out", str(gone), "--resume", "--no-progress"]) == 2
    assert "holds finished results whose checkpoint is gone" in capsys.readouterr().err
    # nor is a folder of runs (each would be a class of plots)
    assert main(["pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "new"), "--no-progress"]) == 2
    assert f"holds vissl-lite results folders (gone, {probe.name}, {run.name}), not classes" in capsys.readouterr().err
    # a transfer folder's steps belong to it: no other command writes into it
    (probe / "transfer_settings.json").write_text("{}")
    assert main(["knn", "--checkpoint", str(run), "--out", str(probe), "--no-progress"]) == 2
    assert f"--out {probe} is a transfer folder" in capsys.readouterr().err
    assert json.loads((probe / "metrics.json").read_text())["command"] == "knn"


def test_another_val_fraction_on_the_runs_own_carved_data_is_refused(npz_rgb_noval, npz_gray, tmp_path, capsys):
    """The fraction picks the val (and, for folders, test) images carved from train; evaluating the run's own data
    with another one would score images the backbone was pretrained on."""
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(npz_rgb_noval), "--image-size", "16", "--batch-size", "8", "--max-steps",
                 "1", "--no-probe", "--no-progress", "--out", str(run)]) == 0
    for cmd in ("linear-probe", "knn", "finetune"):
        assert main([cmd, "--checkpoint", str(run), "--val-fraction", "0.3", "--no-progress"]) == 2
        assert f"--val-fraction 0.3: {run} was pretrained on {npz_rgb_noval} with --val-fraction 0.1" in \
            capsys.readouterr().err
    saved = runs.load_checkpoint(run)["config"]
    runs.check_split_fraction(run, saved, None, 0.1)  # the run's own fraction
    runs.check_split_fraction(run, saved, str(npz_gray), 0.3)  # other data: nothing of it was pretrained on
    with_val = dict(saved, data=str(npz_gray))  # data with its own val and test splits carves nothing
    runs.check_split_fraction(run, with_val, None, 0.3)
