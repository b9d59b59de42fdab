"""vissl-lite preview: the views a recipe makes of the user's own images, drawn before any training."""

import pytest

from vissl_lite.cli import main


def test_preview_draws_each_view_seeded_and_refuses_training_flags(npz_gray, tmp_path, capsys):
    args = ["preview", "--data", str(npz_gray), "--augment", "radiology", "--image-size", "16", "--n", "4"]
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert main([*args, "--out", str(a)]) == 0
    assert "wrote" in capsys.readouterr().out and a.stat().st_size > 1000
    assert main([*args, "--out", str(b)]) == 0 and a.read_bytes() == b.read_bytes()  # the same seed, the same draw
    assert main([*args, "--out", str(c), "--seed", "1"]) == 0 and c.read_bytes() != a.read_bytes()
    assert "2 view(s) of 4 train image(s) under 'radiology'" in capsys.readouterr().out  # SimCLR takes two
    assert main(["preview", "--data", str(npz_gray), "--method", "mae", "--augment", "crop_flip", "--image-size", "16",
                 "--n", "2", "--out", str(tmp_path / "m.png")]) == 0
    assert "1 view(s) of 2 train image(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse's usage error
        main(["preview", "--epochs", "3"])
    assert "--epochs is a pretraining option; vissl-lite preview does not use it" in capsys.readouterr().err
