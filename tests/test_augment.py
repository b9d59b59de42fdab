import pytest
import torch

from vissl_lite.augment import AUGMENTS, build_augment
from vissl_lite.augment.views import default_stats

IDENTITY = {"simclr": dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), p_jitter=0.0, p_gray=0.0, p_blur=0.0, p_flip=0.0),
            "crop_flip": dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), p_flip=0.0), "eval": {},
            "radiology": dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), p_affine=0.0, p_window=0.0, p_intensity=0.0,
                              p_gamma=0.0, p_blur=0.0, p_noise=0.0),
            "pathology": dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), p_hflip=0.0, p_vflip=0.0, p_rot90=0.0, p_stain=0.0,
                              p_intensity=0.0, p_blur=0.0),
            "fundus": dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), p_hflip=0.0, p_vflip=0.0, p_affine=0.0,
                           p_intensity=0.0, p_gamma=0.0, p_blur=0.0)}
RANDOM = ["simclr", "crop_flip", "radiology", "pathology", "fundus"]


def batch(channels=3, b=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, channels, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("name", list(AUGMENTS))
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_device_and_channels_kept(name, channels):
    aug = build_augment(name, 16, channels)
    views = aug(batch(channels))
    assert isinstance(views, list) and len(views) >= 1
    for v in views:
        assert v.shape == (8, channels, 16, 16) and v.dtype == torch.float32 and v.device.type == "cpu"
        assert torch.isfinite(v).all()


@pytest.mark.parametrize("name", list(AUGMENTS))
@pytest.mark.parametrize("channels", [1, 3])
def test_probability_zero_is_identity(name, channels):
    x = batch(channels)
    mean, std = default_stats(channels)
    expected = (x.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    for v in build_augment(name, 16, channels, **IDENTITY[name])(x):
        assert torch.allclose(v, expected, atol=1e-4)


@pytest.mark.parametrize("name", RANDOM)
def test_seeded_runs_repeat_and_unseeded_differ(name):
    aug, x = build_augment(name, 16, 3), batch()
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    c = aug(x)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("name", RANDOM)
def test_randomness_is_per_sample(name):
    x = batch(b=1).repeat(16, 1, 1, 1)  # one image, 16 times
    v = build_augment(name, 16, 3)(x)[0]
    distinct = {tuple(row.flatten()[:64].tolist()) for row in v.round(decimals=4)}
    assert len(distinct) > 8


def test_simclr_two_views_differ_and_float_input_matches_uint8():
    aug, x = build_augment("simclr", 16, 3), batch()
    torch.manual_seed(0)
    v1, v2 = aug(x)
    assert not torch.equal(v1, v2)
    torch.manual_seed(0)
    f1, _ = aug(x.float() / 255)
    assert torch.allclose(v1, f1, atol=1e-5)


def test_one_channel_simclr_has_no_colour_ops():
    aug = build_augment("simclr", 16, 1)
    names = [type(m).__name__ for m in aug.pipeline]
    assert "RandomGrayscale" not in names
    jitter = next(m for m in aug.pipeline if type(m).__name__ == "ColorJitter")
    assert jitter.active == (True, True, False, False)  # brightness, contrast; no saturation or hue


def test_bad_input_and_options_are_clear_errors():
    with pytest.raises(ValueError, match="expected a batch"):
        build_augment("simclr", 16, 3)(batch(channels=1))
    with pytest.raises(ValueError, match="unknown augmentation 'nope'. Valid"):
        build_augment("nope", 16, 3)
    with pytest.raises(ValueError, match="Valid: .*p_blur"):
        build_augment("simclr", 16, 3, p_blurr=0.1)
