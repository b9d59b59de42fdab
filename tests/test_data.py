import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vissl_lite.data import (
    DataError,
    DeviceLoader,
    channel_note,
    load_split,
    make_loader,
    parse_spec,
    stratified_split,
)
from vissl_lite.data.datasets import carves_splits
from vissl_lite.data.shapes import CLASS_NAMES, make_shapes

from .conftest import class_images

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_shapes_deterministic_balanced_and_varied():
    x1, y1 = make_shapes(200, 24, seed=5)
    x2, y2 = make_shapes(200, 24, seed=5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (200, 3, 24, 24) and x1.dtype == np.uint8
    assert len(CLASS_NAMES) >= 10 and np.bincount(y1).tolist() == [20] * 10
    x3, _ = make_shapes(200, 24, seed=6)
    assert not np.array_equal(x1, x3)
    # colour is a nuisance: mean colour per class is nearly the same for every class
    means = np.stack([x1[y1 == c].mean(axis=(0, 2, 3)) for c in range(10)])
    assert means.std(axis=0).max() < 20


def test_shapes_splits_are_distinct_images():
    tr, va = load_split("shapes", "train", 16), load_split("shapes", "val", 16)
    assert len(tr) == 5000 and len(va) == 1000 and tr.num_classes == 10
    assert not torch.equal(tr.images[:10], va.images[:10])


def test_npz_gray_keeps_one_channel_and_resizes(npz_gray):
    d = load_split(str(npz_gray), "train", 16)
    assert d.images.shape == (36, 1, 16, 16) and d.images.dtype == torch.uint8
    assert d.labels.shape == (36,) and d.num_classes == 3 and not d.multilabel
    assert load_split(str(npz_gray), "train", 16, channels=3).images.shape[1] == 3
    assert len(load_split(str(npz_gray), "val", 16)) == 9


def test_channel_conversion_is_luma_or_repeat_and_is_reported(npz_gray, npz_rgb_noval, png_tree):
    """A split converted to another channel count says so (the note the probes print); the data's own does not."""
    rgb = load_split(str(npz_rgb_noval), "train", 16)
    gray = load_split(str(npz_rgb_noval), "train", 16, channels=1)
    luma = (rgb.images.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.double).view(1, 3, 1, 1)).sum(1)
    assert (gray.images[:, 0].double() - luma).abs().max() <= 0.501  # rounded in float32
    assert (rgb.source_channels, gray.source_channels, gray.channels) == (3, 3, 1)
    assert channel_note(rgb, "x.npz") is None and "colour images" in channel_note(gray, "x.npz")
    assert "luma" in channel_note(gray, "x.npz")
    up = load_split(str(npz_gray), "test", 16, channels=3)
    assert torch.equal(up.images[:, 0], up.images[:, 2]) and "repeated" in channel_note(up, "g.npz")
    folder = load_split(str(png_tree), "val", 16, channels=1)  # every split knows the files' own channels
    assert folder.source_channels == 3 and folder.channels == 1 and channel_note(folder, "tree") is not None


def test_npz_without_val_gets_stratified_seeded_split(npz_rgb_noval):
    tr = load_split(str(npz_rgb_noval), "train", 16, val_fraction=0.25)
    va = load_split(f"npz:{npz_rgb_noval}", "val", 16, val_fraction=0.25)
    assert len(tr) == 60 and len(va) == 20
    assert torch.bincount(va.labels).tolist() == [5, 5, 5, 5]
    again = load_split(str(npz_rgb_noval), "val", 16, val_fraction=0.25)
    assert torch.equal(va.images, again.images)
    # with a test split only val is carved, from all of train with the split seed, as before test was carved too
    with np.load(npz_rgb_noval) as z:
        x, y = z["train_images"], z["train_labels"][:, 0]
    assert torch.equal(va.images, torch.from_numpy(x[stratified_split(y, 0.25)[1]]).permute(0, 3, 1, 2))
    assert "rgb.npz has no 'val' split, so it is carved from train: val 20 images (25%)" in tr.layout


def test_a_labeled_npz_without_test_gets_test_and_val_carved_like_a_folder(tmp_path):
    """Only train arrays: test is carved first, then val from the rest, stratified and seeded, disjoint; so the
    probes after pretraining have a test split, as they do for a folder without split subfolders."""
    x, y = class_images(10, 2, 8, 1)
    x[:, 0, 0] = np.arange(len(x))  # each image findable by its first pixel
    np.savez(tmp_path / "train_only.npz", train_images=x, train_labels=y)
    splits = {s: load_split(str(tmp_path / "train_only.npz"), s, 8, val_fraction=0.2) for s in ("train", "val", "test")}
    ids = {s: set(d.images[:, 0, 0, 0].tolist()) for s, d in splits.items()}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert set.union(*ids.values()) == set(range(20)) and not ids["test"] & (ids["train"] | ids["val"])
    assert all(torch.bincount(splits[s].labels).tolist() == [2, 2] for s in ("val", "test"))
    assert splits["train"].layout == ("train_only.npz has no 'test' or 'val' split, so it is carved from train: test "
                                      "4 images (20%), val 4 images (20% of the rest)")
    assert carves_splits(str(tmp_path / "train_only.npz"))
    np.savez(tmp_path / "tiny.npz", train_images=x[:4], train_labels=np.arange(4) % 2)  # one image per class left
    assert len(load_split(str(tmp_path / "tiny.npz"), "train", 8)) == 4  # trains on all; evaluation says why not
    with pytest.raises(DataError, match=r"tiny.npz: its 4 training images are too few to carve test and val from"):
        load_split(str(tmp_path / "tiny.npz"), "test", 8)


def test_stratified_split_every_class_and_sizes():
    labels = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    keep, cut = stratified_split(labels, 0.1, seed=0)
    assert len(keep) + len(cut) == len(labels) and not set(keep) & set(cut)
    assert np.bincount(labels[cut]).tolist() == [1, 2, 3, 4, 5]


def test_npz_multilabel_and_missing_keys(tmp_path):
    x = np.zeros((10, 8, 8), np.uint8)
    y = np.random.default_rng(0).integers(0, 2, (10, 4))
    np.savez(tmp_path / "ml.npz", train_images=x, train_labels=y, test_images=x, test_labels=y)
    d = load_split(str(tmp_path / "ml.npz"), "test", 8)
    assert d.multilabel and d.num_classes == 4 and d.labels.dtype == torch.float32
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(DataError, match=r"bad.npz has no 'train_images'.*keys: images"):
        load_split(str(tmp_path / "bad.npz"), "train", 8)
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="trunc.npz"):
        load_split(str(tmp_path / "trunc.npz"), "train", 8)


def test_npz_codes_that_skip_values_are_one_class_each_in_every_split(tmp_path):
    """1/2 (or 1000/2000) codes: two classes, not max + 1 with the rest empty; the same mapping in each split
    (the test split holds only code 2, which must still be class 1)."""
    x = np.zeros((12, 8, 8), np.uint8)
    np.savez(tmp_path / "c.npz", train_images=x, train_labels=np.array([1000, 2000] * 6),
             test_images=x[:4], test_labels=np.full(4, 2000))
    train, val, test = (load_split(str(tmp_path / "c.npz"), s, 8) for s in ("train", "val", "test"))
    assert train.num_classes == test.num_classes == 2 and train.class_names == ["1000", "2000"]
    assert set(train.labels.tolist()) == {0, 1} and set(val.labels.tolist()) <= {0, 1} and (test.labels == 1).all()
    np.savez(tmp_path / "ok.npz", train_images=x, train_labels=np.arange(12) % 3)  # 0..K-1: unchanged
    ok = load_split(str(tmp_path / "ok.npz"), "train", 8)
    assert ok.num_classes == 3 and ok.class_names == [] and set(ok.labels.tolist()) == {0, 1, 2}
    np.savez(tmp_path / "neg.npz", train_images=x, train_labels=np.arange(12) % 3 - 1)
    with pytest.raises(DataError, match="neg.npz: labels include negative codes"):
        load_split(str(tmp_path / "neg.npz"), "train", 8)


def test_png_tree_labeled_with_carved_splits(png_tree):
    splits = {s: load_split(str(png_tree), s, 16) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 30
    assert splits["train"].class_names == ["class_0", "class_1", "class_2"]
    assert all(d.num_classes == 3 and d.images.shape[1:] == (3, 16, 16) for d in splits.values())
    assert set(splits["test"].labels.tolist()) == {0, 1, 2}


def test_hidden_files_and_folders_are_not_images_or_classes(png_tree, tmp_path):
    (png_tree / "class_0" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    (png_tree / ".ipynb_checkpoints").mkdir()
    shutil.copy(png_tree / "class_1" / "10.png", png_tree / ".ipynb_checkpoints" / "10-checkpoint.png")
    (png_tree / "__MACOSX" / "class_0").mkdir(parents=True)
    (png_tree / "__MACOSX" / "class_0" / "._3.png").write_bytes(b"junk")
    splits = {s: load_split(str(png_tree), s, 16) for s in ("train", "val", "test")}  # no decode error
    assert splits["train"].class_names == ["class_0", "class_1", "class_2"]
    assert sum(len(d) for d in splits.values()) == 30
    csv = tmp_path / "LABELS.CSV"  # upper-case suffixes, as Windows tools write them
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(png_tree.glob("class_*/*.png"))
                                            if not p.name.startswith(".")))
    assert load_split(str(csv), "train", 16).class_names == ["class_0", "class_1", "class_2"]
    odd = tmp_path / "labels.txt"  # any name with the csv: prefix
    odd.write_text(csv.read_text())
    assert load_split(f"csv:{odd}", "train", 16).num_classes == 3


def test_unlabeled_folder_recursive_and_streaming(tmp_path):
    for i in range(6):
        d = tmp_path / "imgs" / ("a" if i % 2 else "a/b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 14), i * 40, np.uint8)).save(d / f"{i}.jpg")
    d = load_split(str(tmp_path / "imgs"), "train", 8, val_fraction=0.2, data_mode="stream")
    assert d.files is not None and not d.labeled and (d.labels == -1).all() and d.channels == 1
    assert d.data_mode == "stream" and "--data-mode stream" in d.stream_note
    # auto streams a folder whose decoded size (6 images of 1x8x8 = 384 bytes) is over the limit, and says so
    auto = load_split(str(tmp_path / "imgs"), "train", 8, memory_limit_gb=300e-9)
    assert auto.data_mode == "stream" and "0.0 GB, over --memory-limit-gb 3e-07" in auto.stream_note
    kept = load_split(str(tmp_path / "imgs"), "train", 8, memory_limit_gb=400e-9)
    assert kept.data_mode == "memory" and kept.images is not None and kept.stream_note == ""
    loader = make_loader(d, 2, torch.device("cpu"), num_workers=0)
    x, y = next(iter(loader))
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.uint8


def test_nested_archive_is_unlabeled_and_linked_class_folders_count(png_tree, tmp_path):
    """patient/study/*.png folder names are not classes (every image trains, none is carved away); a class
    folder that is a symlink is read like a real one, and a link back up the tree ends."""
    for i in range(12):
        d = tmp_path / "archive" / f"patient{i % 3}" / f"study{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((10, 10), i * 20, np.uint8)).save(d / f"{i}.png")
    archive = load_split(str(tmp_path / "archive"), "train", 8)
    assert len(archive) == 12 and not archive.labeled and archive.class_names == []
    assert "read as unlabeled: 12 image(s) sit deeper than <folder>/<class>/<image> (e.g. patient" in archive.layout
    stray = tmp_path / "stray"
    shutil.copytree(png_tree, stray)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(stray / "scan.png")  # one loose file unlabels the folder
    assert "1 image(s) sit directly in the folder, beside its subfolders (e.g. scan.png)" in \
        load_split(str(stray), "train", 8).layout
    (tmp_path / "one" / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((10, 10), i * 50, np.uint8)).save(tmp_path / "one" / "images" / f"{i}.png")
    assert "single subfolder" in load_split(str(tmp_path / "one"), "train", 8).layout
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "class_0").symlink_to(png_tree / "class_0", target_is_directory=True)
    (linked / "class_1").symlink_to(png_tree / "class_1", target_is_directory=True)
    (png_tree / "class_1" / "loop").symlink_to(linked, target_is_directory=True)  # a link back up: read once
    splits = [load_split(str(linked), s, 8) for s in ("train", "val", "test")]
    assert sum(map(len, splits)) == 20 and splits[0].class_names == ["class_0", "class_1"]
    # the note gives what was carved, counted: test first, then val from what test left
    assert (f"read as labeled, one class per subfolder: 2 classes (class_0, class_1); carved from train: test "
            f"{len(splits[2])} images (10%), val {len(splits[1])} images (10% of the rest)") in splits[0].layout


def test_corrupt_image_error_names_file(png_tree):
    bad = png_tree / "class_0" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png"):
        for s in ("train", "val", "test"):
            load_split(str(png_tree), s, 16)


def test_cifar_batches(cifar_dir):
    assert parse_spec(str(cifar_dir))[0] == "cifar"
    tr, te = load_split(str(cifar_dir), "train", 32), load_split(str(cifar_dir), "test", 32)
    assert len(tr) + len(load_split(str(cifar_dir), "val", 32)) == 50 and len(te) == 10
    assert tr.images.shape[1:] == (3, 32, 32) and tr.num_classes == 10


def test_idx_folder(idx_dir):
    assert parse_spec(str(idx_dir))[0] == "idx"
    te = load_split(str(idx_dir), "test", 28)
    assert te.images.shape == (20, 1, 28, 28) and te.labels.tolist() == list(np.repeat(np.arange(10), 6)[:20])


def test_missing_path_and_unknown_file_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        parse_spec(str(tmp_path / "nope"))
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(DataError, match="cannot tell the format"):
        parse_spec(str(tmp_path / "x.txt"))


def test_device_loader_epoch_order_and_resume_start(npz_rgb_noval):
    d = load_split(str(npz_rgb_noval), "train", 16, val_fraction=0.25)
    loader = DeviceLoader(d, 8, torch.device("cpu"), seed=1)
    loader.set_epoch(2)
    full = [x for x, _ in loader]
    loader.set_epoch(2, start=3)
    tail = [x for x, _ in loader]
    assert len(full) == len(loader) == 7 and all(torch.equal(a, b) for a, b in zip(full[3:], tail))
    loader.set_epoch(3)
    assert not torch.equal(full[0], next(iter(loader))[0])
    seen = torch.cat([y for _, y in DeviceLoader(d, 60, torch.device("cpu"))])
    assert sorted(seen.tolist()) == sorted(d.labels.tolist())


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present (only in the dev workspace)")
def test_real_medmnist_and_cifar_and_fashion():
    breast = load_split(str(SHARED_DATA / "breastmnist" / "breastmnist.npz"), "test", 28)
    assert breast.images.shape == (156, 1, 28, 28) and breast.num_classes == 2
    retina = load_split(str(SHARED_DATA / "retinamnist" / "retinamnist.npz"), "val", 28)
    assert retina.images.shape == (120, 3, 28, 28) and retina.num_classes == 5
    fashion = load_split(str(SHARED_DATA / "fashion-mnist"), "test", 28)
    assert fashion.images.shape == (10000, 1, 28, 28) and fashion.num_classes == 10


def test_one_colour_file_among_many_gray_makes_the_folder_colour(tmp_path):
    """The channel count is not decided by a small sample: the last of 60 files is the only colour one."""
    for i in range(59):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(tmp_path / f"a{i:02d}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "z.png")
    assert load_split(str(tmp_path), "train", 8).channels == 3


def test_has_labels_reads_listings_not_images(tmp_path, npz_gray, png_tree):
    from vissl_lite.data.datasets import has_labels

    np.savez(tmp_path / "u.npz", train_images=np.zeros((4, 8, 8), np.uint8))
    assert has_labels(str(npz_gray)) and has_labels(str(png_tree)) and has_labels("shapes")
    assert not has_labels(str(tmp_path / "u.npz")) and not has_labels(str(png_tree / "class_0"))


def test_a_run_from_before_test_was_carved_from_arrays_is_not_evaluated_or_resumed_on_that_data(tmp_path, npz_gray):
    """Split rule 1 carved only val from a labeled npz without test arrays, so such a run trained on images that
    the test split carved now holds: evaluating it there, or resuming it, is refused; other data still evaluates,
    and a run of the current rule evaluates as usual."""
    from vissl_lite import runs
    from vissl_lite.config import ConfigError, make_config
    from vissl_lite.eval.finetune import finetune_config
    from vissl_lite.eval.probe import linear_probe
    from vissl_lite.pretraining import pretrain

    x, y = class_images(12, 2, 8, 1)
    np.savez(tmp_path / "train_only.npz", train_images=x, train_labels=y)
    run = tmp_path / "run"
    pretrain(make_config(data=str(tmp_path / "train_only.npz"), out=str(run), backbone="test_resnet", image_size=8,
                         batch_size=8, max_steps=1, probe=False, progress=False))
    ckpt = runs.load_checkpoint(run)
    assert ckpt["split_rule"] == 2
    runs.check_split_rule(run, ckpt, None)  # a run of this rule: nothing to refuse
    del ckpt["split_rule"]  # as an older version wrote it
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(ConfigError, match="older vissl-lite, which carved no test split"):
        linear_probe(run, probe_epochs=1, progress=False)
    with pytest.raises(ConfigError, match="older vissl-lite"):
        finetune_config(run)
    finetune_config(run, data=str(npz_gray))  # other data has its own test split: fine
    with pytest.raises(runs.CheckpointError, match="Start a new --out"):
        pretrain(make_config(data=str(tmp_path / "train_only.npz"), out=str(run), backbone="test_resnet",
                             image_size=8, batch_size=8, max_steps=2, probe=False, progress=False, resume=True))


def test_a_batch_larger_than_each_processs_share_says_the_share(npz_gray):
    """Under torchrun each process gets 1/N of the images: the message counts that share, not the whole set
    (which can be larger than the batch)."""
    data = load_split(str(npz_gray), "train", 16)
    n, batch = len(data), len(data) // 2 + 1
    with pytest.raises(ValueError, match=rf"has {n} images \({n // 2} for each of 2 processes\), fewer than one batch "
                                         rf"of {batch} per process"):
        DeviceLoader(data, batch, torch.device("cpu"), world_size=2)
    with pytest.raises(ValueError, match=rf"has {n} images, fewer than one batch of {n + 1}; lower --batch-size"):
        DeviceLoader(data, n + 1, torch.device("cpu"))
