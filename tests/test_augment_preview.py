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


@pytest.mark.parametrize("n", [1, 4, 8])
def test_grid_title_fits_inside_the_figure(tmp_path, monkeypatch, n):
    """A title naming recipe, arguments, data and seed stays inside the picture however few columns there are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from vissl_lite.eval.reconstruct import save_image_rows

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to measure it
    title = ("radiology (crop_scale=0.35,1.0, rotate=10, gamma=0.8,1.25, noise=0.02) on pneumoniamnist.npz train, "
             "28 px, seed 0")
    rows = {"as evaluated": torch.zeros(n, 1, 8, 8), "view 1": torch.ones(n, 1, 8, 8)}
    save_image_rows(rows, ((0.5,), (0.5,)), tmp_path / "g.png", title)
    (fig,) = figures
    box, text = fig.bbox, fig.texts[0].get_window_extent(fig.canvas.get_renderer())
    assert box.x0 <= text.x0 and text.x1 <= box.x1 and text.y1 <= box.y1
    assert fig.texts[0].get_text().replace("\n", " ") == title  # wrapped, nothing dropped
    close(fig)


def test_preview_of_12bit_data_in_16bit_files_says_why_the_grid_is_dark(tmp_path, capsys):
    """The note pretraining gives for narrow 16-bit data ('auto' maps 0-65535, so 0-4095 loads nearly black) is
    also what preview, the look before training, prints; with --window dataset there is nothing to warn about."""
    import numpy as np
    from PIL import Image

    (tmp_path / "xray").mkdir()
    for i in range(6):
        values = np.linspace(100, 4000 - i, 256).reshape(16, 16).astype(np.uint16)
        Image.fromarray(values).save(tmp_path / "xray" / f"{i}.png")
    args = ["preview", "--data", str(tmp_path / "xray"), "--image-size", "16", "--n", "2",
            "--out", str(tmp_path / "p.png")]
    assert main(args) == 0
    assert "note: the sampled 16-bit files hold values up to 4000 of 65535" in capsys.readouterr().out
    assert main([*args, "--window", "dataset"]) == 0
    assert "16-bit files hold values" not in capsys.readouterr().out
