"""vissl-lite transfer: pretraining, frozen protocols and fine-tuning in one command and one report."""

import json
import os
import shutil

import pytest
import torch

from vissl_lite.cli import main
from vissl_lite.eval.transfer_report import compare, medmnist_table, ssl_ahead_unjudged, ssl_wins

FAST = ["--image-size", "16", "--batch-size", "12", "--max-steps", "3", "--probe-epochs", "3", "--seeds", "2",
        "--label-fraction", "0.5,1", "--finetune-args", "epochs=1,min_steps=2,batch_size=12", "--no-progress"]


def row(protocol, init, regime, n, mean, std, auc=None, seeds=2):
    r = {"protocol": protocol, "init": init, "regime": regime, "n_train": n, "metric": "top1", "mean": mean,
         "std": std, "seeds": seeds}
    if auc is not None:
        r |= {"auroc_mean": auc, "auroc_std": 0.5}
    return r


def test_compare_needs_the_gap_to_exceed_the_seed_noise():
    rows = [row("linear_probe", "ssl", "1%", 10, 80.0, 1.0, 90.0), row("linear_probe", "random_init", "1%", 10,
                                                                       70.0, 1.0, 89.5),
            row("finetune", "checkpoint", "1%", 10, 71.0, 1.0), row("finetune", "scratch", "1%", 10, 70.0, 1.0),
            row("finetune", "weights", "1%", 10, 99.0, 0.0)]
    found = {c["protocol"]: c for c in compare(rows)}
    assert set(found) == {"linear_probe", "finetune"}  # supplied weights have no random twin to beat
    assert found["linear_probe"]["acc"] == {"delta": 10.0, "noise": 1.41, "verdict": "better"}
    assert found["linear_probe"]["auc"]["verdict"] == "within noise"  # +0.5 against 0.71 of noise
    assert found["finetune"]["acc"]["verdict"] == "within noise" and "auc" not in found["finetune"]
    single = compare([row("knn k=20", "ssl", "10%", 5, 60.0, 0.0, seeds=1),
                      row("knn k=20", "random_init", "10%", 5, 61.0, 0.0, seeds=1)])
    assert single[0]["acc"]["verdict"] == "worse, single seed"


def test_no_win_is_claimed_without_noise_or_from_a_one_class_model():
    """kNN on every label gives each seed the same value (std 0 on both sides): a gap there has no noise to
    beat. An SSL model that gives every test image one class, or whose AUC is worse, is not listed as a win."""
    same = compare([row("knn k=20", "ssl", "100%", 50, 75.0, 0.0, seeds=3),
                    row("knn k=20", "random_init", "100%", 50, 71.0, 0.0, seeds=3)])
    assert same[0]["acc"]["verdict"] == "better, no seed spread"
    assert ssl_wins(same) == ([], []) and ssl_ahead_unjudged(same) == ["kNN k=20 100% (+4.0, no seed spread)"]
    from vissl_lite.eval.transfer_report import transfer_summary

    one = [row("linear_probe", "ssl", "100%", 50, 100.0, 0.0, seeds=1),
           row("linear_probe", "random_init", "100%", 50, 56.7, 0.0, seeds=1)]
    console = transfer_summary({"data": "shapes", "eval": {"table": one, "comparison": compare(one)}})
    assert "SSL beats random init (ACC beyond seed noise, AUC not worse) in: none" in console
    assert "ACC higher with no seed noise to judge it by (more --seeds would): linear probe 100% (+43.3, single " \
           "seed)" in console
    collapsed = [one[0] | {"one_class_seeds": 1, "auroc_mean": 50.0, "auroc_std": 0.0},
                 one[1] | {"auroc_mean": 70.0, "auroc_std": 0.0}]
    assert ssl_ahead_unjudged(compare(collapsed)) == ["linear probe 100% (+43.3, single seed, predicts one class)"]
    collapsed[0].pop("one_class_seeds")
    assert ssl_ahead_unjudged(compare(collapsed)) == ["linear probe 100% (+43.3, single seed, AUC lower)"]
    collapsed = row("finetune", "checkpoint", "10%", 5, 73.08, 0.0, 60.0) | {"one_class_seeds": 2}
    auc_worse = row("linear_probe", "ssl", "10%", 5, 80.0, 1.0, 80.0)
    rows = [collapsed, row("finetune", "scratch", "10%", 5, 60.0, 1.0, 63.6), auc_worse,
            row("linear_probe", "random_init", "10%", 5, 70.0, 1.0, 90.0),
            row("linear_probe", "ssl", "100%", 50, 80.0, 1.0, 90.0),
            row("linear_probe", "random_init", "100%", 50, 70.0, 1.0, 90.0)]
    found = compare(rows)
    assert [c.get("one_class", False) for c in found] == [True, False, False]
    assert all(c["acc"]["verdict"] == "better" for c in found)
    wins, mixed = ssl_wins(found)
    assert wins == ["linear probe 100%"]
    assert mixed == ["fine-tune 10% (predicts one class)", "linear probe 10% (AUC worse)"]


def test_seed_std_is_the_sample_std():
    from vissl_lite.eval.probe import aggregate_seeds, seed_std, table_rows

    assert seed_std([1.0, 3.0]) == pytest.approx(2 ** 0.5) and seed_std([5.0]) == 0.0
    agg = aggregate_seeds([{"top1": 1.0, "n_train": 4, "lr": 0.1, "metrics": {"top1": 1.0}},
                           {"top1": 3.0, "n_train": 4, "lr": 0.1, "metrics": {"top1": 3.0}}])
    assert agg["top1_std"] == pytest.approx(2 ** 0.5) and agg["top1"] == 2.0
    # the full result kept beside the means is the first seed's, and the file says so
    assert agg["metrics"] == {"top1": 1.0} and "first seed's" in agg["metrics_note"]
    regime = {"name": "10%", "label_fraction": 0.1, "labels_per_class": 0, "seeds": 2}
    assert table_rows(agg | {"label_regime": regime}, "linear_probe", "ssl")[0]["std"] == pytest.approx(2 ** 0.5)


def test_medmnist_table_has_acc_and_auc_per_regime():
    rows = [row("linear_probe", "ssl", "1%", 47, 83.44, 1.21, 89.6), row("linear_probe", "ssl", "100%", 4708, 85.5,
                                                                         0.1, 93.7)]
    table = medmnist_table(rows)
    assert "| protocol | init | ACC 1% (47) | AUC 1% | ACC 100% (4708) | AUC 100% |" in table
    assert "| linear probe | SSL | 83.4 ± 1.2 | 89.6 ± 0.5 | 85.5 ± 0.1 | 93.7 ± 0.5 |" in table


def test_multilabel_rows_are_reported_as_mean_auc_and_map_not_as_acc(tmp_path):
    """Multi-label rows have no top-1: their mean is the mean AUROC. The table, the comparison, the console and
    the report name it so, show mAP beside it, and draw the AUC label-efficiency plot."""
    from vissl_lite.eval.transfer_report import transfer_summary, write_transfer_report

    def ml(init, regime, n, auc, map_):
        return {"protocol": "linear_probe", "init": init, "regime": regime, "n_train": n, "metric": "auroc_mean",
                "mean": auc, "std": 1.0, "seeds": 2, "map_mean": map_, "map_std": 0.5}

    rows = [ml("ssl", "10%", 51, 80.0, 40.0), ml("random_init", "10%", 51, 60.0, 30.0),
            ml("ssl", "100%", 512, 85.0, 45.0), ml("random_init", "100%", 512, 84.5, 44.8)]
    table = medmnist_table(rows)
    assert "| mean AUC 10% (51) | mAP 10% |" in table and "ACC" not in table
    assert "| linear probe | SSL | 80.0 ± 1.0 | 40.0 ± 0.5 | 85.0 ± 1.0 | 45.0 ± 0.5 |" in table
    found = compare(rows)
    assert "acc" not in found[0] and found[0]["auc"]["verdict"] == "better" and found[0]["map"]["delta"] == 10.0
    assert found[1]["auc"]["verdict"] == "within noise"
    assert ssl_wins(found) == (["linear probe 10%"], [])
    data = tmp_path / "ml.npz"
    data.write_bytes(b"")  # data_name needs the file to exist, not to be read
    metrics = {"data": str(data), "config": {"method": "simclr", "augment": "simclr", "backbone": "resnet18",
                                             "image_size": 28, "epochs": 1, "data": str(data)},
               "environment": {}, "checkpoint": "run", "timing": {"total_s": 60}, "steps": {},
               "eval": {"table": rows, "comparison": found}}
    text = write_transfer_report(tmp_path, metrics).read_text()
    assert "| protocol | labels | Δmean AUC | ΔmAP |" in text and "+20.0 (better)" in text
    assert "ACC is top-1" not in text and (tmp_path / "label_efficiency_auc.png").is_file()
    summary = transfer_summary(metrics)
    assert "test mean AUC / mAP" in summary and "80.0 ± 1.0 /  40.0" in summary
    assert "(mean AUC beyond seed noise) in: linear probe 10%" in summary


@pytest.mark.slow
def test_transfer_end_to_end_and_resume_reuses_every_step(npz_gray, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["transfer", "--data", str(npz_gray), "--augment", "radiology", "--out", str(out)] + FAST) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = m["eval"]["table"]
    protocols = {(r["protocol"], r["init"]) for r in rows}
    assert protocols == {("linear_probe", "ssl"), ("linear_probe", "random_init"), ("knn k=20", "ssl"),
                         ("knn k=20", "random_init"), ("finetune", "checkpoint"), ("finetune", "scratch")}
    assert {r["regime"] for r in rows} == {"50%", "100%"} and all(len(r["values"]) == 2 for r in rows)
    assert len(m["eval"]["comparison"]) == 6  # 3 protocols x 2 regimes, each against its random twin
    report = (out / "report.md").read_text()
    assert "ACC 50%" in report and "Does SSL beat random initialisation?" in report
    assert (out / "label_efficiency_acc.png").stat().st_size > 1000
    assert (out / "label_efficiency_auc.png").is_file() == any("auroc_mean" in r for r in rows)
    for step in ("pretrain", "frozen", "finetune"):
        assert (out / step / "metrics.json").is_file()
    ft = json.loads((out / "finetune" / "metrics.json").read_text())
    assert ft["config"]["augment"] == "radiology"  # the medical preset carries over to fine-tuning
    assert "SSL beats random init" in capsys.readouterr().out

    stamps = {s: (out / s / "metrics.json").stat().st_mtime_ns for s in ("pretrain", "frozen", "finetune")}
    assert main(["transfer", "--data", str(npz_gray), "--augment", "radiology", "--out", str(out)] + FAST) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["transfer", "--data", str(npz_gray), "--augment", "radiology", "--out", str(out), "--resume"]
                + FAST) == 0
    assert stamps == {s: (out / s / "metrics.json").stat().st_mtime_ns for s in stamps}  # nothing recomputed
    assert json.loads((out / "metrics.json").read_text())["eval"]["table"] == rows
    # other settings on --resume would reuse the finished steps under the new labels: refused, naming what differs
    other = tmp_path / "other.npz"
    other.write_bytes(npz_gray.read_bytes())
    for change, said in ((["--data", str(other)], "data: '"), (["--knn-k", "5"], "knn_k: [20] then, [5] now"),
                         (["--backbone", "resnet34"], "backbone: 'resnet18' then, 'resnet34' now"),
                         (["--protocols", "knn"], "protocols: ['finetune', 'knn', 'linear_probe'] then"),
                         (["--finetune-args", "epochs=2,min_steps=2"], "finetune_args: {'epochs': 1,")):
        argv = ["transfer", "--data", str(npz_gray), "--augment", "radiology", "--out", str(out), "--resume"]
        assert main(argv + FAST + change) == 2
        err = capsys.readouterr().err
        assert f"--resume: {out} was started with other settings ({said}" in err, err
    assert stamps == {s: (out / s / "metrics.json").stat().st_mtime_ns for s in stamps}
    # another command does not write into a transfer's steps or folder
    for cmd, into in (("linear-probe", out / "frozen"), ("knn", out)):
        assert main([cmd, "--checkpoint", str(out / "pretrain"), "--out", str(into), "--no-progress"]) == 2
        assert f"--out {into} " in capsys.readouterr().err
    argv = ["transfer", "--data", str(npz_gray), "--augment", "radiology", "--out", str(out), "--resume"] + FAST
    # the same path with other contents is other data
    st = npz_gray.stat()
    os.utime(npz_gray, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert main(argv) == 2
    finally:
        os.utime(npz_gray, ns=(st.st_atime_ns, st.st_mtime_ns))
    err = capsys.readouterr().err
    assert "(the --data files (sizes or modification times) changed since; the pretraining data" in err
    # without its settings file nothing says what the finished steps were made with
    (out / "transfer_settings.json").rename(tmp_path / "settings")
    assert main(argv) == 2
    assert "transfer_settings.json is missing, so nothing says which settings made" in capsys.readouterr().err
    (tmp_path / "settings").rename(out / "transfer_settings.json")
    # the same command spelled from another working folder is the same transfer, and so is one that gives a
    # setting its recipe already has or changes only how steps run (device, progress, workers)
    assert main(["transfer", "--data", f"{npz_gray.parent}/../{npz_gray.parent.name}/{npz_gray.name}", "--augment",
                 "radiology", "--out", str(out), "--resume", "--device", "cpu", "--method", "simclr",
                 "--num-workers", "0"] + FAST) == 0
    # the finished pretraining's own config is checked too, also where no settings file says what it was
    kept = tmp_path / "kept"
    shutil.copytree(out / "pretrain", kept / "pretrain")
    assert main(argv + ["--out", str(kept), "--max-steps", "5"]) == 2
    assert f"the finished pretraining in {kept / 'pretrain'} was trained with other settings (max_steps: 3 then, 5 " \
           "now)" in capsys.readouterr().err
    # fine-tuning's own settings may change until it is finished (here: never started)
    shutil.rmtree(out / "finetune")
    assert main(argv + ["--finetune-args", "epochs=1,min_steps=3,batch_size=12"]) == 0
    assert json.loads((out / "finetune" / "metrics.json").read_text())["config"]["min_steps"] == 3
    assert "min_steps=3" in (out / "report.md").read_text()  # the report states the overrides
    assert main(argv) == 2  # and once it is finished, they are fixed
    assert "finetune_args: {'epochs': 1, 'min_steps': 3" in capsys.readouterr().err
    # fine-tuning cut short, resumed with --data spelled another way: its finished sub-runs are reused
    (out / "finetune" / "metrics.json").unlink()
    (out / "finetune" / "scratch" / "50pct" / "seed1" / "result.json").unlink()
    at = argv.index("--data") + 1
    assert main(argv[:at] + [f"{npz_gray.parent}/../{npz_gray.parent.name}/{npz_gray.name}"] + argv[at + 1:]
                + ["--finetune-args", "epochs=1,min_steps=3,batch_size=12"]) == 0
    assert capsys.readouterr().out.count("finished earlier: reused from") == 7
    assert "reused from an earlier one: pretrain, frozen, finetune (7 of 8 runs))" in (out / "report.md").read_text()
    # pretraining cut short after its last checkpoint: the report says how far the earlier invocation got
    (out / "pretrain" / "metrics.json").unlink()
    assert main(argv + ["--finetune-args", "epochs=1,min_steps=3,batch_size=12"]) == 0
    assert "(this invocation; reused from an earlier one: pretrain up to step 3, frozen, finetune)" in \
        (out / "report.md").read_text()
    # --checkpoint: the run trained further is another starting point for the frozen and fine-tuning steps
    ck = tmp_path / "ck"
    argv = ["transfer", "--data", str(npz_gray), "--checkpoint", str(out / "pretrain"), "--out", str(ck),
            "--protocols", "knn", "--seeds", "1", "--label-fraction", "1", "--no-progress"]
    assert main(argv) == 0
    # a checkpoint is known by its weights: moved, it is the same; replaced at the same step, it is not
    moved = tmp_path / "moved.pt"
    shutil.copyfile(out / "pretrain" / "checkpoint.pt", moved)
    at = argv.index("--checkpoint") + 1
    assert main(argv[:at] + [str(moved)] + argv[at + 1:] + ["--resume"]) == 0
    saved = torch.load(moved, weights_only=True)
    name = next(k for k, v in saved["model"].items() if v.is_floating_point())
    saved["model"][name] = saved["model"][name] + 1
    torch.save(saved, moved)
    assert main(argv[:at] + [str(moved)] + argv[at + 1:] + ["--resume"]) == 2
    assert "(the checkpoint's weights changed since)" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(out / "pretrain"), "--resume", "--max-steps", "4", "--no-progress"]) == 0
    assert main(argv + ["--resume"]) == 2
    assert "the checkpoint was at step 3 then, 4 now" in capsys.readouterr().err
    # an --init-weights file is known by its contents: a copy elsewhere is the same, other weights are not
    from safetensors.torch import save_file

    from vissl_lite.backbones import create_backbone

    torch.manual_seed(0)
    save_file(create_backbone("resnet18", in_chans=3, img_size=16, small_input=False).state_dict(),
              tmp_path / "w1.safetensors")
    shutil.copyfile(tmp_path / "w1.safetensors", tmp_path / "w2.safetensors")
    wargv = argv[:-1] + ["--out", str(tmp_path / "ckw"), "--no-progress", "--init-weights"]
    assert main(wargv + [str(tmp_path / "w1.safetensors")]) == 0
    assert "- **supplied weights** (--init-weights" in (tmp_path / "ckw" / "report.md").read_text()
    assert main(wargv + [str(tmp_path / "w2.safetensors"), "--resume"]) == 0
    torch.manual_seed(1)
    save_file(create_backbone("resnet18", in_chans=3, img_size=16, small_input=False).state_dict(),
              tmp_path / "w2.safetensors")
    assert main(wargv + [str(tmp_path / "w2.safetensors"), "--resume"]) == 2
    assert "(the --init-weights file's contents changed since)" in capsys.readouterr().err


def test_transfer_bad_options_are_clear_errors(npz_gray, tmp_path, capsys):
    assert main(["transfer", "--out", str(tmp_path / "x")]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["transfer", "--data", str(npz_gray), "--protocols", "probe", "--out", str(tmp_path / "y")]) == 2
    assert "unknown protocol" in capsys.readouterr().err
    assert main(["transfer", "--data", str(npz_gray), "--finetune-args", "epochs", "--out", str(tmp_path / "z")]) == 2
    assert "--finetune-args" in capsys.readouterr().err
    # the architecture is pretraining's: found before any pretraining, with the flag that sets it
    assert main(["transfer", "--data", str(npz_gray), "--finetune-args", "image_size=32", "--out",
                 str(tmp_path / "z")]) == 2
    assert "image_size cannot be set for fine-tuning alone" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["transfer", "--data", str(npz_gray), "--checkpoint", str(tmp_path / "bad.pt"), "--out",
                 str(tmp_path / "w")]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
    assert main(["transfer", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "v")]) == 2
    # --checkpoint is pretrained already: pretraining flags would be silently ignored
    assert main(["transfer", "--data", str(npz_gray), "--checkpoint", str(tmp_path / "bad.pt"), "--backbone",
                 "resnet34", "--lr", "0.1", "--seeds", "1", "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err
    assert "--backbone, --lr: pretraining settings, and --checkpoint" in err and "--seeds" not in err
    # an interrupted transfer is finished with --resume, not silently continued by a fresh command
    (tmp_path / "t" / "pretrain").mkdir(parents=True)
    (tmp_path / "t" / "pretrain" / "checkpoint.pt").write_bytes(b"")
    assert main(["transfer", "--data", str(npz_gray), "--out", str(tmp_path / "t")]) == 2
    assert "holds an unfinished transfer; pass --resume" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "xyzwvu")  # a failed start leaves no empty run folder


def test_an_interrupt_during_pretraining_points_at_transfer_resume(npz_gray, tmp_path, monkeypatch):
    """Stopped in its pretraining step, transfer must not advise 'vissl-lite pretrain --resume', which would
    finish pretraining only."""
    import vissl_lite.pretraining as pretraining
    import vissl_lite.train as train
    from vissl_lite.eval.transfer import transfer

    def stopped(cfg):
        raise train.TrainingInterrupted(f"SIGTERM at step 3: wrote {cfg.out}/checkpoint.pt; continue with "
                                        f"'vissl-lite pretrain --out {cfg.out} --resume'", 15)

    monkeypatch.setattr(pretraining, "pretrain", stopped)
    with pytest.raises(train.TrainingInterrupted) as stop:
        transfer(str(npz_gray), out=tmp_path / "t", image_size=16, progress=False)
    assert stop.value.signum == 15 and "SIGTERM at step 3: wrote" in str(stop.value)
    assert "'vissl-lite transfer' command with --resume" in str(stop.value) and "pretrain --out" not in str(stop.value)
