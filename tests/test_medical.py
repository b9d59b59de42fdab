"""Medical augmentation presets and the windowing of high-range grayscale files."""

import numpy as np
import pytest
import torch
from PIL import Image

from vissl_lite.augment import build_augment
from vissl_lite.augment.medical import (
    _HED_FROM_RGB,
    gamma_jitter,
    hed_jitter,
    intensity_jitter,
    random_rot90,
    window_jitter,
)
from vissl_lite.augment.views import default_stats
from vissl_lite.config import ConfigError, make_config
from vissl_lite.data import DataError, load_split
from vissl_lite.data.decode import dataset_window, decode_image, parse_window


def unnormalise(v: torch.Tensor, channels: int) -> torch.Tensor:
    mean, std = default_stats(channels)
    return v * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)


@pytest.mark.parametrize("name,channels", [("radiology", 1), ("pathology", 1), ("pathology", 3), ("fundus", 3)])
def test_presets_keep_channels_and_value_range(name, channels):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (32, channels, 24, 24), dtype=torch.uint8)
    for v in build_augment(name, 16, channels)(x):
        assert v.shape == (32, channels, 16, 16)
        raw = unnormalise(v, channels)
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5  # every intensity step clips to [0, 1]


def test_radiology_does_not_flip_by_default_and_flips_per_axis_on_request():
    geometry = build_augment("radiology", 16, 1).geometry
    assert geometry.p_flip == 0 and geometry.p_vflip == 0
    x = torch.arange(16.0).repeat(4, 1, 16, 1) / 16  # (4, 1, 16, 16), brighter to the right
    keep = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), p_affine=0.0, p_window=0.0, p_intensity=0.0, p_gamma=0.0,
                p_blur=0.0, p_noise=0.0)
    out = unnormalise(build_augment("radiology", 16, 1, p_hflip=1.0, **keep)(x)[0], 1)
    assert torch.allclose(out, x.flip(-1), atol=1e-5)
    out = unnormalise(build_augment("radiology", 16, 1, p_vflip=1.0, **keep)(x)[0], 1)
    assert torch.allclose(out, x.flip(-2), atol=1e-5)


def test_presets_make_as_many_views_as_the_method_needs():
    x = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    assert len(build_augment("radiology", 16, 1, views=1)(x)) == 1
    assert len(build_augment("radiology", 16, 1, views=2)(x)) == 2
    assert len(build_augment("radiology", 16, 1, views=1, n_views=3)(x)) == 3  # the user's choice wins
    make_config(method="mae", backbone="vit_tiny_patch16_224", augment="radiology", image_size=16)
    make_config(method="simclr", augment="pathology")
    with pytest.raises(ConfigError, match=r"takes 2 view.*n_views=1 in --augment-args .* drop n_views"):
        make_config(method="simclr", augment="radiology", augment_args="n_views=1")
    with pytest.raises(ConfigError, match=r"--augment simclr makes 2; use --augment crop_flip or radiology"):
        make_config(method="mae", backbone="vit_tiny_patch16_224", augment="simclr")


def test_one_channel_presets_have_no_colour_step():
    assert build_augment("pathology", 16, 1).p_stain == 0  # stain jitter needs colour
    assert build_augment("pathology", 16, 3).p_stain > 0


def test_rot90_gives_each_of_the_four_rotations_uniformly():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 5, 5).repeat(4000, 1, 1, 1)
    out = random_rot90(x)
    rots = [torch.rot90(x[0], k, dims=(1, 2)) for k in range(4)]
    which = torch.stack([(out - r).abs().flatten(1).amax(1) < 1e-7 for r in rots], 1)
    assert (which.sum(1) == 1).all()  # each output is exactly one rotation of the input
    counts = which.sum(0).float() / len(x)
    assert (counts - 0.25).abs().max() < 0.03  # 4000 draws: 3 standard errors is ~0.02
    # the GPU branch (rotate the whole batch, pick per image with where) gives what the CPU branch gives
    y = torch.rand(64, 3, 6, 6)
    torch.manual_seed(1)
    on_subsets = random_rot90(y, p=0.7, subset=True)
    torch.manual_seed(1)
    assert torch.equal(random_rot90(y, p=0.7, subset=False), on_subsets)


def test_monotone_intensity_steps_keep_the_order_of_intensities():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 8, 8)
    for y in (window_jitter(x, 0.2, 1.0), gamma_jitter(x, (0.5, 2.0), 1.0)):
        for xi, yi in zip(x.flatten(1), y.flatten(1)):
            order = xi.argsort()
            assert (yi[order].diff() >= -1e-6).all()
    assert torch.allclose(intensity_jitter(x, 0.0, 0.0, 1.0), x, atol=1e-6)


def test_gamma_is_log_uniform_and_window_jitter_changes_images():
    torch.manual_seed(0)
    x = torch.full((4000, 1, 1, 1), 0.5)
    g = torch.log(gamma_jitter(x, (0.5, 2.0), 1.0).flatten()) / np.log(0.5)  # the drawn exponents
    assert abs(float(torch.log(g).mean())) < 0.03  # log-uniform on [log 0.5, log 2]: mean 0
    assert not torch.equal(window_jitter(torch.rand(8, 1, 4, 4), 0.2, 1.0), torch.rand(8, 1, 4, 4))


def test_hed_matrix_matches_the_published_stain_separation():
    # scikit-image's hed_from_rgb (Ruifrok & Johnston 2001), to 4 decimals
    published = np.array([[1.8780, -1.0077, -0.5561], [-0.0659, 1.1347, -0.1355], [-0.6019, -0.4804, 1.5736]])
    assert np.allclose(_HED_FROM_RGB.numpy(), published, atol=1e-3)


def test_hed_jitter_round_trips_at_zero_and_moves_colours_along_the_stains():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 6, 6).clamp(min=1 / 255)
    assert torch.allclose(hed_jitter(x, 0.0, 1.0), x, atol=1e-5)  # RGB -> HED -> RGB
    y = hed_jitter(x, 0.1, 1.0)
    assert y.min() >= 0 and y.max() <= 1 and (y - x).abs().mean() > 1e-3
    assert torch.equal(hed_jitter(x, 0.1, 0.0), x)  # p = 0 leaves every image as it was


def test_one_channel_pretraining_with_a_preset_end_to_end(npz_gray, tmp_path):
    from vissl_lite.pretraining import pretrain

    for method, backbone in (("simclr", "resnet18"), ("mae", "vit_tiny_patch16_224"), ("dae", "resnet18")):
        m = pretrain(make_config(method=method, backbone=backbone, data=str(npz_gray), augment="radiology",
                                 image_size=16, batch_size=8, max_steps=2, probe=False, progress=False,
                                 out=str(tmp_path / method)))
        assert m["train"]["steps"] == 2 and np.isfinite(m["train"]["final_loss"])


# ---- windowing of files with more than 8 bits


def write16(path, values: np.ndarray):
    Image.fromarray(values.astype(np.uint16)).save(path)  # PIL writes mode I;16 for uint16 arrays
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("window", ["auto", "file", "300,50000"])
def test_16bit_round_trip_keeps_the_order_of_intensities(tmp_path, suffix, window):
    rng = np.random.default_rng(0)
    values = rng.permutation(np.linspace(300, 50000, 256)).reshape(16, 16)
    f = write16(tmp_path / f"img{suffix}", values)
    with Image.open(f) as im:
        assert im.mode.startswith("I")  # really stored with 16 bits
    out = decode_image(f, 16, 1, parse_window(window))[0].numpy().astype(int)
    order = np.argsort(values.ravel())
    assert (np.diff(out.ravel()[order]) >= 0).all()  # monotone mapping
    # the 16-bit values were not crushed to a few levels ('auto' maps the format's whole 0-65535 range)
    assert len(np.unique(out)) > (180 if window == "auto" else 240)


@pytest.mark.parametrize("window", ["auto", "file", "-1000,1000"])
def test_float_tiff_in_hounsfield_units_is_windowed_not_clipped_at_zero(tmp_path, window):
    """A 32-bit float TIFF (CT exported in HU, negative values, a NaN outside the field of view) goes through the
    window like a 16-bit file: order kept, negative values not all crushed to black."""
    values = np.random.default_rng(1).permutation(np.linspace(-1000, 1000, 256)).reshape(16, 16).astype(np.float32)
    values[0, 0] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "ct.tif")
    out = decode_image(tmp_path / "ct.tif", 16, 1, parse_window(window))[0].numpy().astype(int)
    order = np.argsort(values.ravel()[1:])
    assert (np.diff(out.ravel()[1:][order]) >= 0).all() and out[0, 0] == 0
    assert len(np.unique(out[values < 0])) > 90  # the 128 values below 0 HU are resolved, not clipped to black
    if window == "-1000,1000":
        assert np.abs(out.ravel()[1:] - (values.ravel()[1:] + 1000) / 2000 * 255).max() <= 0.51
    assert dataset_window([tmp_path / "ct.tif"])[0] < -900


def test_explicit_window_clips_outside_and_dataset_window_keeps_differences_between_files(tmp_path):
    root = tmp_path / "xray"
    for cls, (lo, hi) in (("dark", (1000, 2000)), ("bright", (3000, 4000))):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            write16(root / cls / f"{i}.png", np.linspace(lo, hi, 64).reshape(8, 8) + i)
    f = root / "dark" / "0.png"
    clipped = decode_image(f, 8, 1, (1500.0, 1600.0))[0].numpy()
    assert clipped.min() == 0 and clipped.max() == 255
    per_file = load_split(str(root), "train", 8, window="file", progress=False)
    shared = load_split(str(root), "train", 8, window="dataset", progress=False)
    mean = {n: {c: float(s.images[s.labels == i].float().mean()) for i, c in enumerate(s.class_names)}
            for n, s in (("file", per_file), ("dataset", shared))}
    assert abs(mean["file"]["dark"] - mean["file"]["bright"]) < 5  # each file stretched alike: difference gone
    assert mean["dataset"]["bright"] - mean["dataset"]["dark"] > 100  # one window for all: difference kept
    test = load_split(str(root), "test", 8, window="dataset", progress=False)
    assert test.window == shared.window  # every split gets the training files' window


def test_12bit_data_in_16bit_files_gets_a_note_naming_the_fix(tmp_path, capsys):
    """12-bit values in 16-bit PNGs load nearly black under 'auto' (the documented full-range rule); pretraining
    says so and names --window dataset or 0,4095. Full-range 16-bit data and an explicit window get no note."""
    from vissl_lite.pretraining import pretrain

    narrow, wide = tmp_path / "narrow", tmp_path / "wide"
    for root, top in ((narrow, 4000), (wide, 60000)):
        root.mkdir()
        for i in range(8):
            write16(root / f"{i}.png", np.linspace(300, top - i, 64).reshape(8, 8))
    auto = load_split(str(narrow), "train", 8, progress=False)
    assert int(auto.images.max()) == round(255 * 4000 / 65535)  # the rule the note explains: 0-16 of 255
    assert "values up to 4000 of 65535" in auto.window_note and "--window 0,4095" in auto.window_note
    assert load_split(str(narrow), "train", 8, window="dataset", progress=False).window_note == ""
    assert load_split(str(narrow), "train", 8, window="0,4095", progress=False).window_note == ""
    assert load_split(str(wide), "train", 8, progress=False).window_note == ""
    pretrain(data=str(narrow), out=str(tmp_path / "run"), image_size=8, batch_size=8, max_steps=1, probe=False,
             progress=False, backbone="resnet18")
    assert "--window dataset (one range from the training files)" in capsys.readouterr().out


def test_a_dataset_window_is_computed_once_in_pretraining_and_reused_on_other_data(tmp_path, capsys, npz_gray):
    """'--window dataset' resolves on the pretraining files; the run stores the pair, and the probes and
    fine-tuning map other data (here brighter) with it instead of with that data's own percentiles."""
    from vissl_lite import runs
    from vissl_lite.eval.finetune import finetune_config
    from vissl_lite.pretraining import pretrain

    for name, offset in (("pool", 0), ("target", 2000)):
        for cls, (lo, hi) in (("a", (1000, 2000)), ("b", (3000, 4000))):
            (tmp_path / name / cls).mkdir(parents=True)
            for i in range(10):
                write16(tmp_path / name / cls / f"{i}.png", np.linspace(lo, hi, 64).reshape(8, 8) + offset + i)
    pretrain(data=str(tmp_path / "pool"), window="dataset", out=str(tmp_path / "run"), image_size=8, batch_size=8,
             epochs=1, probe=False, progress=False, backbone="resnet18")
    resolved = load_split(str(tmp_path / "pool"), "train", 8, window="dataset", progress=False).window
    assert "--window dataset maps" in capsys.readouterr().out
    assert runs.load_checkpoint(tmp_path / "run")["window"] == list(resolved)
    cfg, _, _ = runs.load_run(tmp_path / "run")
    assert parse_window(cfg.window) == resolved
    assert parse_window(finetune_config(tmp_path / "run").window) == resolved
    # fine-tuning the run maps data as pretraining did: the same window, given either way, passes; another is refused
    lo_hi = ",".join(str(v) for v in resolved)
    for same in ("dataset", lo_hi):
        assert parse_window(finetune_config(tmp_path / "run", window=same).window) == resolved  # not re-resolved
    with pytest.raises(ConfigError, match=r"--window file: .* pretrained with --window dataset \(.*leave --window out"):
        finetune_config(tmp_path / "run", window="file")
    from vissl_lite.cli import main

    with pytest.raises(SystemExit):
        main(["linear-probe", "--checkpoint", str(tmp_path / "run"), "--window", "file"])
    err = capsys.readouterr().err
    assert "pretrain again with it; 'vissl-lite finetune --checkpoint' keeps the run's --window" in err
    # array formats hold 8-bit images: 'dataset' has nothing to resolve there and the run stores no window
    pretrain(data=str(npz_gray), window="dataset", out=str(tmp_path / "npz"), image_size=8, batch_size=8,
             max_steps=1, probe=False, progress=False, backbone="resnet18")
    assert "window" not in runs.load_checkpoint(tmp_path / "npz")
    other = load_split(str(tmp_path / "target"), "train", 8, window=cfg.window, progress=False)
    own = load_split(str(tmp_path / "target"), "train", 8, window="dataset", progress=False)
    assert other.images.float().mean() > own.images.float().mean() + 40  # brighter data stays brighter


def test_bad_window_values_are_config_errors():
    for bad in ("wide", "400,-1000", "1,2,3"):
        with pytest.raises(ConfigError, match="window"):
            make_config(window=bad)
    assert parse_window("-1000,400") == (-1000.0, 400.0)


@pytest.mark.parametrize("res", [28, 64, 128, 224])
@pytest.mark.parametrize("channels", [1, 3])
def test_medmnist_npz_at_every_resolution(tmp_path, res, channels):
    """MedMNIST+ ships each set at 28, 64, 128 and 224 px; the same reader loads them at their own size (exactly)
    or resized to --image-size."""
    rng = np.random.default_rng(res)
    shape = (6, res, res) if channels == 1 else (6, res, res, 3)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / f"pneumoniamnist_{res}.npz"
    np.savez(path, train_images=images, train_labels=np.arange(6)[:, None] % 2, test_images=images[:2],
             test_labels=np.array([[0], [1]]))
    native = load_split(str(path), "test", res, progress=False)
    assert native.images.shape == (2, channels, res, res) and native.channels == channels
    expected = images[:2] if channels == 1 else images[:2].transpose(0, 3, 1, 2)
    assert np.array_equal(native.images.reshape(expected.shape).numpy(), expected)
    small = load_split(str(path), "test", 32, progress=False)
    assert small.images.shape == (2, channels, 32, 32) and small.images.dtype == torch.uint8


def test_elastic_warp_on_the_device_changes_geometry_and_keeps_the_range():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 32, 32)
    keep = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), p_affine=0.0, p_window=0.0, p_intensity=0.0, p_gamma=0.0,
                p_blur=0.0, p_noise=0.0)
    warped = unnormalise(build_augment("radiology", 32, 1, p_elastic=1.0, elastic_alpha=2.0, **keep)(x)[0], 1)
    assert warped.shape == x.shape and not torch.allclose(warped, x, atol=1e-3)
    assert warped.min() >= -1e-5 and warped.max() <= 1 + 1e-5


def test_16bit_files_share_one_range_so_a_dark_file_stays_darker(tmp_path, capsys):
    """'auto' maps every 16-bit file by 0-65535, not by whether its own values pass 255: a dark film (values
    0-199) in a set of brighter ones loads darker than them, and one just above 255 does not flip to black. A set
    whose sampled files all stay below 256 (8-bit images saved as 16-bit files) is read with 0-255, with a note."""
    root, wide = tmp_path / "films", tmp_path / "wide8"
    root.mkdir()
    wide.mkdir()
    for i in range(6):
        write16(root / f"{i}.png", np.linspace(20000, 22000, 64).reshape(8, 8) + i)
        write16(wide / f"{i}.png", np.linspace(0, 200 + i, 64).reshape(8, 8))
    write16(root / "dark.png", np.linspace(0, 199, 64).reshape(8, 8))
    write16(root / "dark257.png", np.linspace(0, 256, 64).reshape(8, 8))
    means = {f.name: float(decode_image(f, 8, 1, "auto").float().mean()) for f in sorted(root.iterdir())}
    assert means["dark.png"] < means["dark257.png"] < min(means[f"{i}.png"] for i in range(6))
    films = load_split(str(root), "train", 8, progress=False)
    assert films.window == "auto" and films.window_note == ""
    eight = load_split(str(wide), "train", 8, progress=False)
    assert eight.window == (0.0, 255.0) and "8-bit images stored in 16-bit files" in eight.window_note
    expected = decode_image(wide / "0.png", 8, 1, (0.0, 255.0))
    assert torch.equal(eight.images[0], expected) and int(eight.images.max()) > 190  # not 0-1 of 255


def test_int32_tiff_with_negative_values_is_windowed_by_its_own_range_not_clipped_at_zero(tmp_path):
    values = np.random.default_rng(2).permutation(np.linspace(-32768, 32752, 256)).reshape(16, 16).astype(np.int32)
    Image.fromarray(values).save(tmp_path / "hu.tif")
    with Image.open(tmp_path / "hu.tif") as im:
        assert im.mode == "I"
    out = decode_image(tmp_path / "hu.tif", 16, 1, "auto")[0].numpy().astype(int)
    order = np.argsort(values.ravel())
    assert (np.diff(out.ravel()[order]) >= 0).all()
    assert len(np.unique(out[values < 0])) > 90  # the negative half is resolved, not all black


def test_a_folder_mixing_grayscale_and_colour_files_says_so(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / f"{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "rgb.png")
    mixed = load_split(str(root), "train", 8, progress=False)
    assert mixed.channels == 3 and "1 of the 6 checked files are colour (e.g." in mixed.layout
    assert "rgb.png" in mixed.layout and "--in-chans 1" in mixed.layout
    assert load_split(str(root), "train", 8, channels=1, progress=False).layout == ""  # asked for: no note
    (root / "rgb.png").unlink()
    assert load_split(str(root), "train", 8, progress=False).layout == ""


def test_window_dataset_with_skip_leaves_unreadable_files_out(tmp_path):
    root = tmp_path / "films"
    root.mkdir()
    for i in range(6):
        write16(root / f"{i}.png", np.linspace(1000, 3000, 64).reshape(8, 8) + i)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png"):
        load_split(str(root), "train", 8, window="dataset", progress=False)
    ok = load_split(str(root), "train", 8, window="dataset", on_bad_file="skip", progress=False)
    assert len(ok) == 6 and ok.skipped == [str(root / "broken.png")] and ok.window[0] >= 1000


def test_window_values_must_be_finite_and_negative_values_parse_on_the_command_line():
    from vissl_lite.cli import _attach_negative_values, build_parser

    for bad in ("0,inf", "nan,400", "-inf,0"):
        with pytest.raises(ConfigError, match="finite"):
            make_config(window=bad)
    args = build_parser().parse_args(_attach_negative_values(["pretrain", "--window", "-1000,400", "--lr", "-1"]))
    assert args.window == "-1000,400"
    assert _attach_negative_values(["pretrain", "--window=-5,5", "--no-progress"]) == [
        "pretrain", "--window=-5,5", "--no-progress"]


def test_transfer_of_a_run_keeps_its_window_refuses_another_and_states_it(tmp_path):
    from vissl_lite.eval.transfer import transfer
    from vissl_lite.pretraining import pretrain

    root = tmp_path / "films"
    for cls, (lo, hi) in (("a", (1000, 2000)), ("b", (3000, 4000))):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            write16(root / cls / f"{i}.png", np.linspace(lo, hi, 64).reshape(8, 8) + i)
    pretrain(data=str(root), window="dataset", out=str(tmp_path / "run"), image_size=8, batch_size=8, max_steps=1,
             probe=False, progress=False, backbone="resnet18")
    with pytest.raises(ConfigError, match="pretrained with --window dataset"):
        transfer(str(root), checkpoint=tmp_path / "run", out=tmp_path / "t1", window="file", protocols=("knn",))
    m = transfer(str(root), checkpoint=tmp_path / "run", out=tmp_path / "t2", protocols=("knn",), seeds=1,
                 label_fraction=[1.0], progress=False)
    resolved = load_split(str(root), "train", 8, window="dataset", progress=False).window
    assert m["window"] == list(resolved)
    assert f"{resolved[0]:g} to {resolved[1]:g} mapped to 0-255" in (tmp_path / "t2" / "report.md").read_text()
