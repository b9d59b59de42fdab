"""Labels from a CSV next to the images: single-label with class names, multi-label columns, splits."""

import numpy as np
import pytest
from PIL import Image

from vissl_lite.data import DataError, load_split
from vissl_lite.eval.finetune import finetune


def _images(root, n):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        level = 40 if i % 2 else 200
        Image.fromarray((rng.integers(0, 30, (12, 12)) + level).astype(np.uint8)).save(root / f"im{i}.png")
        names.append(f"im{i}.png")
    return names


def test_single_label_csv_with_class_names_and_split_column(tmp_path):
    names = _images(tmp_path / "imgs", 12)
    rows = ["path,label,split"] + [f"imgs/{n},{'dark' if i % 2 else 'bright'},{'test' if i >= 10 else 'train'}"
                                   for i, n in enumerate(names)]
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    train = load_split(str(tmp_path / "labels.csv"), "train", 8, progress=False)
    test = load_split(str(tmp_path / "labels.csv"), "test", 8, progress=False)
    assert train.class_names == ["bright", "dark"] and train.channels == 1
    assert len(test) == 2 and test.labels.tolist() == [0, 1]  # im10 bright, im11 dark
    assert len(train) + len(load_split(str(tmp_path / "labels.csv"), "val", 8, progress=False)) == 10


def test_multilabel_csv_fine_tunes_with_auroc(tmp_path):
    names = _images(tmp_path / "imgs", 40)
    rows = ["path,effusion,nodule"] + [f"imgs/{n},{1 - i % 2},{(i // 2) % 2}" for i, n in enumerate(names)]
    (tmp_path / "chest.csv").write_text("\n".join(rows))
    train = load_split(str(tmp_path / "chest.csv"), "train", 8, progress=False)
    assert train.multilabel and train.class_names == ["effusion", "nodule"] and train.labels.shape[1] == 2
    m = finetune(init="scratch", data=str(tmp_path / "chest.csv"), out=tmp_path / "ft", image_size=8, batch_size=8,
                 epochs=2, min_steps=0, progress=False, val_fraction=0.2)
    assert "auroc_per_label" in m["eval"]["finetune"]["metrics"]


BAD_CSVS = [  # (content, what the error must say): the file, line and column a user has to fix
    ("file,label\nim0.png,x\n", "'path' column"),
    ("path;label\nim0.png;x\n", r"one column holding ';': save the file comma-separated"),
    ("path,label\nim0.png,x\nnope.png,y\n", "nope.png"),
    ("path,a,b\nim0.png,1,2\n", "0 or 1"),
    ("path,label\n\nim0.png,a\nim1.png,\nim2.png,b\n", "no value in label column 'label', first on line 4"),
    ("path,effusion,nodule\nim0.png,1,0\nim1.png,-1,1\n", r"line 3, column 'effusion': '-1' is not 0 or 1.*uncertain"),
    ("path,label\nim0.png,0\nim1.png,-1\n", "negative"),
    ("path,label\nim0.png,0\nim1.png,1\nim2.png,a\n", r"label column 'label' mixes integer codes \(0, 1\) with "
     r"other values \(a\); the first other value is on line 4"),
    ("path,label\nim0.png,1\nim1.png,1.0\nim2.png,0\n", r"codes \(0, 1\) with other values \(1.0\); .* on line 3"),
    ("path,label\nim0.png,cyst\nim1.png,3\nim2.png,tumour\n", r"codes \(3\) with other values \(cyst, tumour\); "
     "the first code is on line 3"),
    ("path,label\nim0.png,0\nim1.png,--1\nim2.png,1\n", r"other values \(--1\)"),  # not a code: no traceback
    ("path,label\nim0.png,a\n,b\n", "line 3 has no path"),
    ("path,label\nim0.png\n", "line 2 has 1 cells for 2 columns"),
    ("path,label\nim0.png,a\nim1.png,b\n./im0.png,b\n", r"lists ./im0.png twice \(lines 2 and 4\)"),
    ("path,label,split\nim0.png,a,train\nim1.png,b,holdout\n", "unknown split value.*holdout"),
    ("path,label,split\nim0.png,a,train\nim1.png,a,train\nim2.png,b,test\n",
     r"bad.csv: the test split has class\(es\) \['b'\] that no training image has"),
    ("path,label\nim0.png,a\nsub\\im1.png,b\n", r"sub\\im1.png.*backslashes \(written on Windows\?\): write them "
     "with '/'"),
]


def test_integer_csv_labels_that_skip_codes_become_one_class_each(tmp_path):
    names = _images(tmp_path, 6)
    codes = [1000, 2000, 7, 2000, 1000, 7]
    (tmp_path / "sparse.csv").write_text("path,label,split\n" + "".join(
        f"{n},{c},{'validation' if i == 5 else 'train'}\n" for i, (n, c) in enumerate(zip(names, codes))))
    train = load_split(str(tmp_path / "sparse.csv"), "train", 8, progress=False)
    val = load_split(str(tmp_path / "sparse.csv"), "val", 8, progress=False)  # 'validation' is val, as for folders
    assert train.class_names == ["7", "1000", "2000"] and set(train.labels.tolist()) == {0, 1, 2}
    assert val.labels.tolist() == [0] and val.num_classes == 3
    (tmp_path / "dense.csv").write_text("path,label\n" + "".join(f"{n},{i % 3}\n" for i, n in enumerate(names)))
    assert load_split(str(tmp_path / "dense.csv"), "train", 8, progress=False).class_names == ["0", "1", "2"]


@pytest.mark.parametrize("content, message", BAD_CSVS)
def test_csv_errors_name_the_problem(tmp_path, content, message):
    _images(tmp_path, 3)
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        load_split(str(tmp_path / "bad.csv"), "train", 8)


def test_csv_as_spreadsheets_write_it(tmp_path):
    """Excel's UTF-8 byte-order mark, header case, padded cells and blank lines read as the plain file does."""
    names = _images(tmp_path / "imgs", 12)
    rows = ["Path , Label ,SPLIT"] + [f" imgs/{n} ,{'dark' if i % 2 else 'bright'} ,{'test' if i >= 10 else 'train'}"
                                      for i, n in enumerate(names)] + ["", " , , "]
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode())
    test = load_split(str(tmp_path / "excel.csv"), "test", 8, progress=False)
    assert test.class_names == ["bright", "dark"] and test.labels.tolist() == [0, 1]
    assert not test.multilabel  # 'SPLIT' is the split column, not a second label
    (tmp_path / "trailing.csv").write_text("path,effusion,nodule,,\n" + "".join(
        f"imgs/{n},{1.0 * (i % 2):.2f},{i // 6},,\n" for i, n in enumerate(names)))  # '0.00', empty columns
    multi = load_split(str(tmp_path / "trailing.csv"), "train", 8, progress=False)
    assert multi.class_names == ["effusion", "nodule"] and set(multi.labels.flatten().tolist()) == {0.0, 1.0}


def test_data_signature_follows_the_files_a_spec_reads(tmp_path):
    """Equal while the data is left alone, from any spelling; different when a file it reads is rewritten, added or
    removed. A CSV's signature covers the images it lists, not only the CSV."""
    import os
    import shutil

    from vissl_lite.data.datasets import data_signature

    names = _images(tmp_path / "imgs" / "a", 4) and _images(tmp_path / "imgs" / "b", 4)
    (tmp_path / "l.csv").write_text("path,label\n" + "\n".join(f"imgs/a/{n},x" for n in names))
    folder, csv = str(tmp_path / "imgs"), str(tmp_path / "l.csv")
    before = {spec: data_signature(spec) for spec in (folder, csv)}
    assert data_signature(f"folder:{folder}") == before[folder] and len(set(before.values())) == 2
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")  # not read by the loader: no change
    assert data_signature(folder) == before[folder]
    st = (tmp_path / "imgs" / "a" / "im0.png").stat()
    os.utime(tmp_path / "imgs" / "a" / "im0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten
    assert data_signature(folder) != before[folder] and data_signature(csv) != before[csv]
    os.utime(tmp_path / "imgs" / "a" / "im0.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert {spec: data_signature(spec) for spec in (folder, csv)} == before
    shutil.copy(tmp_path / "imgs" / "b" / "im0.png", tmp_path / "imgs" / "b" / "im9.png")  # one image more
    assert data_signature(folder) != before[folder] and data_signature(csv) == before[csv]
    assert data_signature("shapes") == "shapes"


def test_one_class_csv_is_not_scored(tmp_path, capsys):
    """A CSV whose rows all carry one label pretrains, but no probe reports a 100% that any constant answer gets."""
    from vissl_lite.cli import main

    names = _images(tmp_path / "imgs", 16)
    (tmp_path / "labels.csv").write_text("\n".join(["path,label"] + [f"imgs/{n},normal" for n in names]))
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(tmp_path / "labels.csv"), "--out", str(run), "--image-size", "8",
                 "--batch-size", "4", "--max-steps", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "evaluation skipped: --data" in out and "has one class ('normal'), so there is nothing to classify" in out
    assert main(["linear-probe", "--checkpoint", str(run), "--no-progress"]) == 2
    assert "pass data with at least 2 classes with --data" in capsys.readouterr().err


def test_transfer_refuses_one_class_data_before_pretraining(tmp_path, npz_gray):
    """transfer scores classifiers on --data: one class is refused up front, not after pretraining."""
    from vissl_lite.cli import main

    names = _images(tmp_path / "imgs", 8)
    (tmp_path / "labels.csv").write_text("\n".join(["path,label"] + [f"imgs/{n},normal" for n in names]))
    with np.load(npz_gray) as z:
        arrays = dict(z)
    arrays["train_labels"] = np.zeros_like(arrays["train_labels"])  # (N, 1) codes, all class 0
    np.savez(tmp_path / "one.npz", **arrays)
    from vissl_lite.config import ConfigError
    from vissl_lite.eval.transfer import transfer

    for data, named in ((tmp_path / "labels.csv", "'normal'"), (tmp_path / "one.npz", "'0'")):
        with pytest.raises(ConfigError) as refused:
            transfer(str(data), out=str(tmp_path / "t"))
        assert f"has one class ({named}) in its train split, so there is nothing to classify" in str(refused.value)
        assert not (tmp_path / "t").exists()  # refused before any pretraining
        assert main(["transfer", "--data", str(data), "--out", str(tmp_path / "t")]) == 2


def test_csv_without_split_rows_says_what_was_carved(tmp_path):
    """A CSV with no val/test rows has them carved from train, and the note counts each, as a folder's does; a CSV
    that gives every split has nothing to report."""
    names = _images(tmp_path / "imgs", 40)
    (tmp_path / "plain.csv").write_text("\n".join(["path,label"] + [f"imgs/{n},{'ab'[i % 2]}"
                                                                     for i, n in enumerate(names)]))
    splits = [load_split(str(tmp_path / "plain.csv"), s, 8, progress=False) for s in ("train", "val", "test")]
    assert sum(map(len, splits)) == 40 and len(splits[1]) > 0 and len(splits[2]) > 0
    assert splits[0].layout == (f"{tmp_path / 'plain.csv'} has no val or test rows (split column), so they are carved "
                                f"from train: test {len(splits[2])} images (10%), val {len(splits[1])} images (10% "
                                "of the rest)")
    (tmp_path / "val.csv").write_text("\n".join(["path,label,split"] + [
        f"imgs/{n},{'ab'[i % 2]},{'val' if i < 4 else 'train'}" for i, n in enumerate(names)]))
    val_only = load_split(str(tmp_path / "val.csv"), "train", 8, progress=False)
    assert "has no test rows" in val_only.layout and "val " not in val_only.layout.split(":")[-1]
    (tmp_path / "all.csv").write_text("\n".join(["path,label,split"] + [
        f"imgs/{n},{'ab'[i % 2]},{('val', 'test', 'train', 'train')[i % 4]}" for i, n in enumerate(names)]))
    assert load_split(str(tmp_path / "all.csv"), "train", 8, progress=False).layout == ""
