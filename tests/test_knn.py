import json

import numpy as np
import pytest
import torch

from vissl_lite import runs
from vissl_lite.cli import main
from vissl_lite.config import make_config
from vissl_lite.eval.knn import knn_eval, knn_predict
from vissl_lite.pretraining import pretrain

from .conftest import clustered_features

FAST = dict(backbone="resnet18", image_size=16, batch_size=16, log_every=2, checkpoint_every=100, progress=False,
            warmup_epochs=0.5)


def knn_reference(train_x, train_y, q, num_classes, k, t):
    """A plain loop: normalise, rank all training points per query, add exp(cos/T) to the class of the top k."""
    bank = torch.nn.functional.normalize(train_x, dim=1)
    out = torch.zeros(len(q), num_classes)
    for i, row in enumerate(torch.nn.functional.normalize(q, dim=1)):
        sims = bank @ row
        for j in torch.argsort(sims, descending=True)[:k]:
            out[i, train_y[j]] += torch.exp(sims[j] / t)
    return out


def test_knn_matches_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    x, y, q = torch.randn(60, 8, generator=g), torch.randint(0, 4, (60,), generator=g), torch.randn(9, 8, generator=g)
    fast = knn_predict(x, y, q, 4, k=7, temperature=0.1, chunk=4)
    assert torch.allclose(fast, knn_reference(x, y, q, 4, 7, 0.1), rtol=1e-4)


def test_k_above_the_bank_votes_with_every_image_and_the_table_says_so():
    from vissl_lite.eval.report import results_table

    g = torch.Generator().manual_seed(3)
    x, y, q = torch.randn(6, 8, generator=g), torch.randint(0, 3, (6,), generator=g), torch.randn(5, 8, generator=g)
    assert torch.allclose(knn_predict(x, y, q, 3, k=20), knn_reference(x, y, q, 3, 6, 0.07), rtol=1e-4)
    row = dict(init="ssl", regime="1%", n_train=6, metric="top1", mean=50.0, std=0.0, seeds=1)
    clamped = results_table([row | {"protocol": "knn k=20"}, row | {"protocol": "knn k=5"}])
    assert "kNN k=20: where n train is below k" in clamped and "kNN k=5:" not in clamped
    assert "clamped" not in results_table([row | {"protocol": "knn k=5"}, row | {"protocol": "linear probe"}])


@pytest.mark.parametrize("seeds", [1, 2])
def test_console_marks_k_above_the_bank(seeds):
    """The console kNN lines (one regime, and one line per row with several) say when k exceeded the bank."""
    from vissl_lite.eval.probe import evaluate_features, row_line, summary, table_rows

    split = clustered_features(3, 8, spread=4.0)
    cached = {"train": split(12), "test": split(30)}
    cfg = make_config(knn_k=[5, 50], seeds=seeds)
    ev = evaluate_features(cached, 3, "avg", 8, cfg, ("knn",))
    line = summary({"eval": ev})
    assert "k=50 (clamped to 12):" in line and "k=5:" in line and "k=5 (" not in line
    rows = table_rows(ev["knn"], "knn", "ssl")
    assert ["k clamped to n" in row_line(r) for r in rows] == [False, True]


def test_knn_separable_is_perfect_and_shuffled_is_chance():
    split = clustered_features(5, 32, spread=4.0, seed=1)
    g = torch.Generator().manual_seed(2)

    assert knn_eval(split(500), split(200), 5, ks=(20, 200))["top1"] == {20: 100.0, 200: 100.0}
    # no structure at all: features and labels independent, so accuracy is chance (20%) over many queries
    noise = (torch.randn(2000, 32, generator=g), torch.randint(0, 5, (2000,), generator=g))
    queries = (torch.randn(2000, 32, generator=g), torch.randint(0, 5, (2000,), generator=g))
    assert 16 < knn_eval(noise, queries, 5, ks=(20,))["top1"][20] < 24
    x, _ = split(10)
    with pytest.raises(ValueError, match="needs labels"):
        knn_eval((x, torch.full((10,), -1)), split(10), 5)


def test_online_monitor_logs_and_does_not_change_training(npz_gray, tmp_path):
    common = dict(data=str(npz_gray), epochs=2, probe=False, **FAST | {"batch_size": 12})
    pretrain(make_config(out=str(tmp_path / "plain"), **common))
    pretrain(make_config(out=str(tmp_path / "mon"), knn_every=1, knn_k=[3], **common))
    a = runs.load_checkpoint(tmp_path / "plain")["model"]
    b = runs.load_checkpoint(tmp_path / "mon")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    lines = [json.loads(x) for x in (tmp_path / "mon" / "metrics.jsonl").read_text().splitlines()]
    knn_lines = [r for r in lines if "knn_top1" in r]
    assert [r["epoch"] for r in knn_lines] == [1.0, 2.0] and all(0 <= r["knn_top1"] <= 100 for r in knn_lines)
    m = json.loads((tmp_path / "mon" / "metrics.json").read_text())
    assert m["train"]["final_loss"] is not None  # monitor lines do not hide the last loss


def test_cli_knn_and_pretrain_report_knn(npz_gray, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(npz_gray), "--out", str(run), "--image-size", "16", "--batch-size", "12",
                 "--epochs", "1", "--probe-epochs", "2", "--knn-k", "3,5", "--no-progress"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["eval"]["knn"]["top1"]) == {"3", "5"}  # JSON keys
    assert "knn_random_init" in m["eval"] and "weighted kNN" in m["eval"]["knn"]["protocol"]
    assert main(["knn", "--checkpoint", str(run), "--knn-k", "4", "--knn-temperature", "0.1", "--no-progress"]) == 0
    k = json.loads((run / "knn" / "metrics.json").read_text())
    assert k["command"] == "knn" and list(k["eval"]["knn"]["top1"]) == ["4"]
    assert k["eval"]["knn"]["temperature"] == 0.1 and "linear_probe" not in k["eval"]
    assert "kNN, SSL backbone" in capsys.readouterr().out
    # several label regimes: the console lists every (protocol, init, regime) row, as report.md does
    assert main(["knn", "--checkpoint", str(run), "--knn-k", "4", "--label-fraction", "0.5,1", "--seeds", "2",
                 "--out", str(tmp_path / "regimes"), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "regimes" / "metrics.json").read_text())["eval"]["table"]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("knn k=4")]
    assert len(printed) == len(rows) == 4 and sum(" 50% labels" in line for line in printed) == 2
    assert all("+-" in line and line.endswith("(2 seeds)") for line in printed)


def test_label_subsets_are_stratified_sized_and_seeded():
    from vissl_lite.data import label_subset

    labels = np.repeat(np.arange(4), [100, 50, 20, 3])
    idx = label_subset(labels, fraction=0.1, seed=0)
    assert np.bincount(labels[idx]).tolist() == [10, 5, 2, 1]  # every class keeps at least one
    assert np.array_equal(idx, label_subset(labels, fraction=0.1, seed=0))
    assert not np.array_equal(idx, label_subset(labels, fraction=0.1, seed=1))
    assert np.bincount(labels[label_subset(labels, per_class=5, seed=0)]).tolist() == [5, 5, 5, 3]
    multi = (np.random.default_rng(0).random((40, 3)) < 0.5).astype(np.float32)
    assert len(label_subset(multi, fraction=0.25)) == 10
    with pytest.raises(ValueError, match="labels_per_class needs single-label"):
        label_subset(multi, per_class=2)


def test_low_label_evaluation_reports_mean_and_std_over_seeds(npz_gray, tmp_path, capsys):
    run = tmp_path / "run"
    # one way to choose the labeled subset at a time: both given is an error, not one silently winning
    assert main(["pretrain", "--data", str(npz_gray), "--label-fraction", "0.5", "--labels-per-class", "2"]) == 2
    assert "are two ways to choose the labeled subset; give one" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(npz_gray), "--out", str(run), "--image-size", "16", "--batch-size", "12",
                 "--max-steps", "1", "--no-probe", "--no-progress", "--label-fraction", "0.5"]) == 0
    # the run's own --label-fraction 0.5 gives way to the --labels-per-class given now
    assert main(["knn", "--checkpoint", str(run), "--labels-per-class", "2", "--seeds", "3", "--knn-k", "3",
                 "--no-baseline", "--no-progress"]) == 0
    k = json.loads((run / "knn" / "metrics.json").read_text())["eval"]["knn"]
    assert k["n_train"] == [6, 6, 6] and len(k["per_seed"]) == 3 and k["label_regime"]["seeds"] == 3
    assert k["label_regime"]["label_fraction"] == 1.0
    # kNN keeps its full metrics per k: the report's confusion matrix is the first k's
    report = (run / "knn" / "report.md").read_text()
    assert "## Confusion matrix" in report and "knn k=3, ssl init, 2/class labels" in report
    assert (run / "knn" / "confusion_matrix.png").stat().st_size > 5000
    assert k["top1"]["3"] == pytest.approx(np.mean([s["3"] for s in k["per_seed"]]))
    capsys.readouterr()
    assert main(["knn", "--checkpoint", str(run), "--labels-per-class", "2,20", "--knn-k", "3", "--no-baseline",
                 "--out", str(tmp_path / "capped"), "--no-progress"]) == 0  # 12 train images per class
    out = capsys.readouterr().out
    assert "fewer labeled train images than asked in 20/class (3 of 3 classes)" in out
    assert [line.endswith("3 classes short of 20/class)") for line in out.splitlines() if "labels (n=" in line] == \
        [False, True]
    report = (tmp_path / "capped" / "report.md").read_text()
    assert "20/class: some classes have fewer" in report and "2/class:" not in report
    rows = json.loads((tmp_path / "capped" / "metrics.json").read_text())["eval"]["table"]
    assert [(r["regime"], r["n_train"], r["short_classes"]) for r in rows] == [("2/class", 6, 0), ("20/class", 36, 3)]
    assert main(["linear-probe", "--checkpoint", str(run), "--label-fraction", "0.5", "--seeds", "2",
                 "--probe-epochs", "3", "--no-progress"]) == 0
    lp = json.loads((run / "linear_probe" / "metrics.json").read_text())["eval"]
    assert lp["linear_probe"]["n_train"] == [18, 18] and "top1_std" in lp["linear_probe_random_init"]
    assert "+-" in capsys.readouterr().out


def test_knn_on_multilabel_data_says_why_it_was_skipped(tmp_path):
    """kNN voting is single-label: on multi-label data the console and report.md give the reason, once."""
    from vissl_lite.eval.probe import evaluate_features, summary
    from vissl_lite.eval.report import write_report

    g = torch.Generator().manual_seed(0)
    cached = {s: (torch.randn(20, 8, generator=g), torch.randint(0, 2, (20, 3), generator=g).float())
              for s in ("train", "test")}
    ev = evaluate_features(cached, 3, "avg", 8, make_config(), ("knn",))
    ev["knn_random_init"] = dict(ev["knn"])
    assert "kNN skipped: kNN voting is single-label" in summary({"eval": ev})
    report = write_report(tmp_path, {"command": "knn", "eval": ev, "config": {}}, {})
    assert report.read_text().count("kNN skipped: kNN voting is single-label") == 1


def test_online_monitor_runs_at_the_last_step_and_is_off_with_a_note_on_multilabel(npz_gray, tmp_path, capsys):
    common = dict(epochs=1, probe=False, **FAST | {"batch_size": 12})
    pretrain(make_config(data=str(npz_gray), out=str(tmp_path / "short"), knn_every=5, knn_k=[3], **common))
    lines = [json.loads(x) for x in (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if "knn_top1" in r] == [1.0]  # 5 epochs never come: the last step logs it
    # multi-label labels: the monitor is off before training (it used to stop the run after its first epoch)
    x = np.random.default_rng(0).integers(0, 256, (24, 16, 16), dtype=np.uint8)
    y = np.random.default_rng(1).integers(0, 2, (24, 3))
    np.savez(tmp_path / "ml.npz", train_images=x, train_labels=y, val_images=x[:8], val_labels=y[:8],
             test_images=x[-8:], test_labels=y[-8:])
    pretrain(make_config(data=str(tmp_path / "ml.npz"), out=str(tmp_path / "ml"), knn_every=1, **common))
    assert "--knn-every is off: kNN classifies single-label data" in capsys.readouterr().out
    assert runs.load_checkpoint(tmp_path / "ml")["step"] == 2
    assert not any("knn_top1" in x for x in (tmp_path / "ml" / "metrics.jsonl").read_text().splitlines())


def test_embedding_plot_of_multilabel_data_says_how_its_points_are_coloured(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from vissl_lite.eval.report import plot_embedding

    figures, subplots = [], plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: figures.append(subplots(*a, **k)) or figures[-1])
    x, y = torch.randn(30, 8), torch.zeros(30, 3)
    y[:10, 1], y[10:20, 2], y[5:15, 0] = 1, 1, 1  # rows 20-29 have no label
    plot_embedding({"ssl": (x, y)}, tmp_path / "e.png", ["a", "b", "c"])
    ax = figures[0][1][0, 0]
    assert ax.get_title().endswith("by first positive label")
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["a", "b", "c", "no label"]
    plot_embedding({"ssl": (x, y.argmax(1))}, tmp_path / "s.png", ["a", "b", "c"])  # single-label: as it was
    assert figures[1][1][0, 0].get_title() == "ssl: test features, PCA"
