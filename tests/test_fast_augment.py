"""The batched replacements for kornia ops (colour.py, geometry.py) against the ops they replace: same output for the
same random draw, and draws with the same distribution."""

import itertools
import math

import kornia.augmentation as K
import kornia.filters as KF
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from vissl_lite.augment import build_augment
from vissl_lite.augment.colour import ColorJitter, RandomGaussianBlur, RandomGrayscale, adjust_hue_, grayscale
from vissl_lite.augment.geometry import LOOP_ABOVE, RandomAffine, ResizedCropFlip, affine_warp, resized_crop
from vissl_lite.augment.medical import gaussian_noise

FACTOR_KEYS = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")


def images(n=32, channels=3, side=16, seed=0):
    """Random images plus the awkward cases: grey pixels (no hue), ties for the max channel, saturated values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, side, side, generator=g)
    if channels == 3:
        x[0] = x[0, :1]  # a grey image
        x[1, 1] = x[1, 0]  # red and green tie
        x[2, :, :4] = 1.0  # white rows
        x[3, 2] = x[3].amax(0)  # blue holds the max everywhere
        x[4] = torch.round(x[4] * 4) / 4  # many exact ties
    return x


@pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[::5])
def test_colour_jitter_matches_kornia_for_the_same_draw(order):
    x = images()
    ours = ColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0)
    kornia = K.ColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0)
    torch.manual_seed(sum(order))
    params = ours.sample(len(x), "cpu")
    params["order"] = list(order)
    expected = kornia.apply_transform(x, {k: f.flatten() for k, f in zip(FACTOR_KEYS, params["factors"])}
                                      | {"order": torch.tensor(order)}, flags={})
    torch.testing.assert_close(ours.apply(x, params), expected, atol=1e-5, rtol=0)


def test_one_channel_jitter_matches_kornia():
    x = images(channels=1)
    ours, kornia = ColorJitter(0.5, 0.7, p=1.0), K.ColorJitter(0.5, 0.7, p=1.0)
    params = ours.sample(len(x), "cpu")
    expected = kornia.apply_transform(x, {k: f.flatten() for k, f in zip(FACTOR_KEYS, params["factors"])}
                                      | {"order": torch.tensor(params["order"])}, flags={})
    torch.testing.assert_close(ours.apply(x, params), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="need RGB"):
        ColorJitter(0.5, 0.5, 0.5, 0.1)(x)


@pytest.mark.parametrize("turns", [-0.5, -0.2, -0.01, 0.0, 0.13, 0.2, 0.5])
def test_hue_matches_torchvision(turns):
    x = images()
    expected = torch.stack([TF.adjust_hue(img, turns) for img in x])
    got = adjust_hue_(x.clone(), torch.full((len(x), 1, 1, 1), turns))
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_jitter_draws_have_the_stated_distribution():
    torch.manual_seed(0)
    jitter = ColorJitter(0.8, 0.4, 0.6, 0.2, p=0.8)
    params = jitter.sample(20000, "cpu")
    picked = params["picked"].flatten()
    assert abs(picked.float().mean().item() - 0.8) < 0.015
    for f, (lo, hi), neutral in zip(params["factors"], [(0.2, 1.8), (0.6, 1.4), (0.4, 1.6), (-0.2, 0.2)],
                                    (1.0, 1.0, 1.0, 0.0)):
        f = f.flatten()
        assert (f[~picked] == neutral).all()
        drawn = f[picked]
        assert drawn.min() >= lo and drawn.max() <= hi
        # uniform on [lo, hi]: mean and variance within 4 standard errors
        n, mean, var = len(drawn), (lo + hi) / 2, (hi - lo) ** 2 / 12
        assert abs(drawn.mean().item() - mean) < 4 * math.sqrt(var / n)
        assert abs(drawn.var().item() - var) < 4 * var * math.sqrt(0.8 / n)
    orders = {tuple(jitter.sample(1, "cpu")["order"]) for _ in range(300)}
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders) and len(orders) > 15  # random permutations


def test_images_not_picked_are_unchanged():
    x = images() * 1.2 - 0.1  # values outside [0, 1] too: returned as they came
    torch.manual_seed(3)
    jitter = ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.5)
    params = jitter.sample(len(x), "cpu")
    out = jitter.apply(x, params)
    kept = ~params["picked"].flatten()
    assert kept.any() and (~kept).any()
    assert torch.equal(out[kept], x[kept])
    assert not torch.equal(out[~kept], x[~kept])
    assert torch.equal(ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.0)(x), x)


def test_grayscale_matches_kornia_and_is_per_image():
    x = images(64)
    from kornia.color import rgb_to_grayscale

    torch.testing.assert_close(grayscale(x), rgb_to_grayscale(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(grayscale(x), TF.rgb_to_grayscale(x), atol=2e-4, rtol=0)  # its red weight is 0.2989
    torch.manual_seed(0)
    out = RandomGrayscale(p=0.5)(x)
    grey = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert 10 < grey.sum() < 54
    assert torch.equal(out[~grey], x[~grey])


@pytest.mark.parametrize("kernel", [3, 5])
def test_blur_matches_kornia_for_the_same_sigma(kernel):
    x = images(8, side=20)
    blur = RandomGaussianBlur(kernel, (0.1, 2.0), p=1.0)
    torch.manual_seed(5)
    out = blur(x)
    torch.manual_seed(5)
    sigma = torch.empty(len(x), 1).uniform_(0.1, 2.0)  # the draw blur.kernels made
    expected = torch.cat([KF.gaussian_blur2d(x[i:i + 1], (kernel, kernel), (s, s), border_type="reflect")
                          for i, s in enumerate(sigma.flatten().tolist())])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    torch.manual_seed(1)
    partly = RandomGaussianBlur(kernel, p=0.5)(x)
    same = (partly == x).flatten(1).all(1)
    assert same.any() and not same.all()  # the images not picked are exactly unchanged
    with pytest.raises(ValueError, match="odd"):
        RandomGaussianBlur(4)


def test_moving_the_crop_keeps_kornia_sampler_on_the_cpu_in_float32():
    """.to() would move kornia's random draws to the device (each box then copied back to the CPU: host syncs on a
    GPU) or to float64; the draws stay CPU float32 and the crop still works after the move."""
    crop = ResizedCropFlip(16).to(torch.float64)
    generator = crop.sampler._param_generator  # kornia's; .to() reaches it through kornia's own _apply
    assert generator.device == torch.device("cpu") and generator.dtype == torch.float32
    boxes = crop.sample((4, 3, 32, 32), "cpu")["boxes"]
    assert boxes.dtype == torch.float32 and boxes.device.type == "cpu"
    assert crop(torch.rand(4, 3, 32, 32, dtype=torch.float64)).shape == (4, 3, 16, 16)


@pytest.mark.parametrize("shape", [(6, 2, 20, 20), (6, 3, 17, 29)])
@pytest.mark.parametrize("padding", ["reflection", "zeros"])
def test_affine_warp_matches_kornia_for_the_same_draw(shape, padding):
    """kornia's RandomAffine (with align_corners=True, the convention in which its pixel matrix and the sampling
    grid agree), given its own draw of angle, shift and zoom, on square and non-square images."""
    torch.manual_seed(3)
    x = torch.rand(shape)
    kornia = K.RandomAffine(degrees=40, translate=(0.1, 0.1), scale=(0.8, 1.2), padding_mode=padding,
                            align_corners=True, p=1.0)
    params = kornia.forward_parameters(x.shape)
    out = affine_warp(x, params["angle"], params["translations"], params["scale"][:, 0], padding)
    torch.testing.assert_close(out, kornia(x, params=params), atol=2e-5, rtol=0)


def test_affine_warp_is_exact_for_quarter_turns_and_whole_pixel_shifts():
    x = images(6, side=12)
    ones = torch.ones(6)
    quarter = affine_warp(x, 90 * ones, torch.zeros(6, 2), ones)  # clockwise as displayed
    torch.testing.assert_close(quarter, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5, rtol=0)
    shifted = affine_warp(x, 0 * ones, torch.tensor([[3.0, -2.0]]).expand(6, 2), ones, padding="zeros")
    torch.testing.assert_close(shifted[:, :, :-2, 3:], x[:, :, 2:, :-3], atol=1e-5, rtol=0)
    assert shifted[:, :, :, :3].abs().max() == 0 and shifted[:, :, -2:].abs().max() == 0


def test_random_affine_draws_in_its_ranges_and_leaves_the_others_unchanged():
    aug = RandomAffine(degrees=10, translate=0.05, scale=(0.9, 1.1), p=0.5)
    torch.manual_seed(0)
    prm = aug.sample((4000, 1, 40, 80), "cpu")
    assert prm["angle"].abs().max() <= 10 and abs(prm["angle"].mean()) < 0.3 and prm["angle"].std() > 5.5
    assert prm["translate"][:, 0].abs().max() <= 4 and prm["translate"][:, 1].abs().max() <= 2  # 5% of 80 and 40
    assert prm["translate"][:, 0].abs().max() > 3.9 and prm["translate"][:, 1].abs().max() > 1.9
    assert 0.9 <= prm["scale"].min() and prm["scale"].max() <= 1.1 and abs(prm["scale"].mean() - 1) < 0.005
    assert abs(prm["picked"].float().mean() - 0.5) < 0.03
    x = images(64, side=20)
    torch.manual_seed(1)
    out = aug(x)
    same = (out == x).flatten(1).all(1)
    assert 16 < same.sum() < 48  # about half warped; the others exactly unchanged
    # the GPU branch (warp all, put the others back) gives what the CPU branch (warp the picked only) gives
    torch.manual_seed(2)
    prm = aug.sample(x.shape, "cpu")
    torch.testing.assert_close(aug.warp(x, prm, subset=False), aug.warp(x, prm, subset=True), atol=1e-6, rtol=0)
    assert torch.equal(aug.warp(x, prm, subset=False)[~prm["picked"]], x[~prm["picked"]])
    with pytest.raises(ValueError, match="padding"):
        RandomAffine(padding="wrap")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_affine_warp_keeps_the_dtype_and_is_accurate_in_half_precision(dtype):
    ramp = torch.linspace(0, 1, 224).expand(2, 1, 224, 224).contiguous()
    angle, zoom = torch.tensor([0.0, 7.0]), torch.tensor([1.0, 1.05])
    expected = affine_warp(ramp, angle, torch.zeros(2, 2), zoom)
    out = affine_warp(ramp.to(dtype), angle, torch.zeros(2, 2), zoom)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, atol=0.01, rtol=0)


def test_noise_is_drawn_for_the_picked_images_only_with_per_image_strength():
    x = torch.full((400, 1, 32, 32), 0.5)
    torch.manual_seed(0)
    out = gaussian_noise(x, std=0.1, p=0.3)
    noise_std = (out - x).flatten(1).std(1)
    picked = noise_std > 0
    assert abs(picked.float().mean() - 0.3) < 0.07 and torch.equal(out[~picked], x[~picked])
    # s ~ U(0, 0.1) per image: the picked images' noise levels spread over that range
    assert noise_std.max() < 0.105 and noise_std[picked].min() < 0.02 and noise_std.max() > 0.09
    assert abs(noise_std[picked].mean() - 0.05) < 0.01
    edges = torch.tensor([0.0, 1.0]).repeat(200).view(400, 1, 1, 1).expand(400, 1, 8, 8)
    noisy = gaussian_noise(edges, std=0.5, p=0.5)
    assert noisy.min() == 0 and noisy.max() == 1 and not torch.equal(noisy, edges)  # clipped to [0, 1]
    assert gaussian_noise(x.bfloat16(), std=0.1, p=0.3).dtype == torch.bfloat16


@pytest.mark.parametrize("size,side", [(16, 16), (16, 40), (LOOP_ABOVE + 8, LOOP_ABOVE + 20)])
def test_resized_crop_is_torchvision_resize_of_the_box(size, side):
    """Up- and downsampling, matmul path and (above LOOP_ABOVE) the per-image path: the crop resized by
    torchvision (antialias, half-pixel centres), mirrored where flip is set."""
    x = images(12, side=side)
    torch.manual_seed(2)
    params = ResizedCropFlip(size, p_flip=0.5).sample(x.shape, "cpu")
    out = resized_crop(x, params["boxes"], size, params["flip"])
    for i, (x0, y0, w, h) in enumerate(params["boxes"].long().tolist()):
        expected = TF.resize(x[i, :, y0:y0 + h, x0:x0 + w], [size, size], antialias=True)
        expected = expected.flip(-1) if params["flip"][i] else expected
        torch.testing.assert_close(out[i], expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("size", [16, LOOP_ABOVE + 8])
def test_vertical_flip_mirrors_rows_and_is_drawn_with_its_probability(size):
    """Both paths: the vertically flipped crop is the unflipped one upside down; p_vflip=0 draws nothing, so the
    photo recipes' random stream is unchanged."""
    x = images(200, side=size + 4)
    torch.manual_seed(3)
    params = ResizedCropFlip(size, p_flip=0.5, p_vflip=0.3).sample(x.shape, "cpu")
    both = resized_crop(x, params["boxes"], size, params["flip"], params["vflip"])
    plain = resized_crop(x, params["boxes"], size, params["flip"])
    v = params["vflip"]
    torch.testing.assert_close(both[v], plain[v].flip(2), atol=2e-5, rtol=0)
    assert torch.equal(both[~v], plain[~v])
    assert abs(v.float().mean().item() - 0.3) < 0.1  # 200 draws: 3 standard deviations
    torch.manual_seed(3)
    none = ResizedCropFlip(size, p_flip=0.5).sample(x.shape, "cpu")
    assert none["vflip"] is None and torch.equal(none["flip"], params["flip"])
    assert torch.equal(none["boxes"], params["boxes"])


def test_resized_crop_matmul_path_matches_the_loop():
    x = images(6, side=48)
    boxes = torch.tensor([[0, 0, 48, 48], [3, 5, 20, 30], [40, 40, 8, 8], [0, 10, 48, 7], [1, 1, 1, 1],
                          [10, 0, 30, 48]], dtype=torch.float32)
    flip = torch.tensor([False, True, False, True, True, False])
    from vissl_lite.augment import geometry

    torch.testing.assert_close(resized_crop(x, boxes, 24, flip), geometry._resized_crop_loop(x, boxes, 24, flip),
                               atol=2e-5, rtol=0)
    assert torch.equal(resized_crop(x[:1], boxes[:1], 48)[0], x[0])  # the whole image at its own size: unchanged


def test_resized_crop_of_uint8_small_is_the_crop_of_the_converted_batch():
    """The matmul path converts uint8 input to float in [0, 1] first: exactly the float batch's crops."""
    x8 = (images(10, side=36) * 255).round().to(torch.uint8)
    torch.manual_seed(4)
    params = ResizedCropFlip(24, p_flip=0.5, p_vflip=0.5).sample(x8.shape, "cpu")
    out = resized_crop(x8, params["boxes"], 24, params["flip"], params["vflip"])
    expected = resized_crop(x8.float() / 255, params["boxes"], 24, params["flip"], params["vflip"])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_resized_crop_of_uint8_large_is_torchvisions_uint8_resize():
    """The per-image path resizes uint8 crops in uint8: each view is torchvision's resize of the uint8 crop (its
    tensor pipeline's kernel) over 255, so on 8-bit levels, and within one level of resizing the float crop."""
    size = LOOP_ABOVE + 8
    x8 = (images(10, side=size + 12) * 255).round().to(torch.uint8)
    torch.manual_seed(4)
    params = ResizedCropFlip(size, p_flip=0.5, p_vflip=0.5).sample(x8.shape, "cpu")
    out = resized_crop(x8, params["boxes"], size, params["flip"], params["vflip"])
    assert out.dtype == torch.float32
    for i, (x0, y0, w, h) in enumerate(params["boxes"].long().tolist()):
        expected = TF.resize(x8[i, :, y0:y0 + h, x0:x0 + w], [size, size], antialias=True)
        assert expected.dtype == torch.uint8
        expected = expected.flip(-1) if params["flip"][i] else expected
        expected = expected.flip(-2) if params["vflip"][i] else expected
        torch.testing.assert_close(out[i], expected.float() / 255, atol=1e-6, rtol=0)
    from_float = resized_crop(x8.float() / 255, params["boxes"], size, params["flip"], params["vflip"])
    diff = (out - from_float).abs()
    assert diff.max() <= 1.05 / 255 and diff.mean() < 0.3 / 255  # rounding (fixed-point weights: at most a level)


def test_blur_of_the_picked_subset_equals_the_whole_batch_convolution():
    """On CPU only the picked images are convolved; the result is the batched convolution with identity kernels
    for the rest."""
    x = images(40, side=20)
    blur = RandomGaussianBlur(5, (0.1, 2.0), p=0.5)
    torch.manual_seed(6)
    out = blur(x)
    torch.manual_seed(6)
    k, picked = blur.kernels(len(x), "cpu")
    torch.testing.assert_close(out, blur.blur(x, k), atol=1e-6, rtol=0)
    assert 0 < picked.sum() < len(x)
    assert torch.equal(out[~picked], x[~picked])
    torch.manual_seed(0)
    none = RandomGaussianBlur(5, p=1e-9)(x)  # nothing picked: an unchanged copy
    assert torch.equal(none, x) and none.data_ptr() != x.data_ptr()


def test_large_cpu_views_are_made_in_chunks_with_the_same_result(monkeypatch):
    """Above CHUNK_BYTES a CPU view is made a few images at a time: for a deterministic pipeline the chunks put
    together are the whole-batch view, and a random one still draws per image (seeded runs repeat)."""
    from vissl_lite.augment import views as V

    x = images(10, side=20)
    whole = V.SimCLRViews(20, p_blur=0.0)
    made = []

    def make(t):
        made.append(len(t))
        return t * 0.5 + 0.1  # fresh, as the pipelines' outputs are

    expected = whole.normalize(x * 0.5 + 0.1)
    monkeypatch.setattr(V, "CHUNK_BYTES", 4 * 3 * 20 * 20 * 3)  # three images per chunk
    torch.testing.assert_close(whole.view(x, make, 20), expected, atol=1e-6, rtol=0)
    assert made == [3, 3, 3, 1]
    aug = V.SimCLRViews(16)
    x8 = (images(10, side=24) * 255).round().to(torch.uint8)
    torch.manual_seed(7)
    a = aug(x8)
    torch.manual_seed(7)
    b = aug(x8)
    assert all(torch.equal(u, w) for u, w in zip(a, b))
    assert a[0].shape == (10, 3, 16, 16) and not torch.equal(a[0], a[1])
    levels = a[0] * whole.std + whole.mean  # back in [0, 1]: the finished views sit on 8-bit levels
    torch.testing.assert_close(levels * 255, (levels * 255).round(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name,channels", [("simclr", 3), ("crop_flip", 3), ("radiology", 1), ("pathology", 3)])
def test_large_uint8_views_on_cpu_equal_the_views_of_the_float_batch(monkeypatch, name, channels):
    """Above LOOP_ABOVE on CPU a uint8 batch is cropped and resized as uint8 and (except crop_flip, a single step)
    the pipeline runs in chunks: for the same seed the views are those of the batch converted to float first, up to
    the resized crops' rounding to 8-bit levels, and the input is left as it was."""
    from vissl_lite.augment import views as V

    size = LOOP_ABOVE + 8
    x8 = (images(6, channels=channels, side=size + 10) * 255).round().to(torch.uint8)
    before = x8.clone()
    monkeypatch.setattr(V, "CHUNK_BYTES", 4 * channels * size * size * 2)  # two images per chunk
    aug = build_augment(name, size, channels, n_views=2)
    seen = []
    first = aug.geometry if hasattr(aug, "geometry") else aug.pipeline[0]
    first.register_forward_pre_hook(lambda module, args: seen.append((args[0].dtype, len(args[0]))))
    torch.manual_seed(8)
    got = aug(x8)
    assert torch.equal(x8, before)
    assert {d for d, _ in seen} == {torch.uint8}
    assert [n for _, n in seen] == ([6, 6] if name == "crop_flip" else [2, 2, 2] * 2)
    torch.manual_seed(8)
    expected = aug(x8.float() / 255)
    level = 1 / 255 / aug.std.min()  # one 8-bit level, normalised
    for g, e in zip(got, expected):
        diff = (g - e).abs()
        assert diff.max() <= 8 * level and diff.mean() < 0.5 * level


def test_crop_boxes_follow_scale_and_ratio():
    torch.manual_seed(0)
    crop = ResizedCropFlip(32, scale=(0.2, 0.6), ratio=(0.5, 2.0), p_flip=0.3)
    params = crop.sample(torch.Size([4000, 3, 64, 64]), "cpu")
    _, _, w, h = params["boxes"].unbind(1)
    area = w * h / 64 ** 2
    assert area.min() > 0.18 and area.max() < 0.63  # rounding to whole pixels moves the bounds slightly
    assert (w / h).min() > 0.45 and (w / h).max() < 2.2
    assert abs(math.log((w / h).median().item())) < 0.1  # log-uniform ratio: median near 1
    assert abs(params["flip"].float().mean().item() - 0.3) < 0.03


def test_simclr_views_match_the_kornia_pipeline_in_distribution():
    """Per-view mean and std of our SimCLR views against the same recipe built from kornia's modules (with the
    half-pixel resize torchvision uses): the quantiles of both statistics agree."""
    x = (images(512, side=32, seed=1) * 255).to(torch.uint8)
    ours = build_augment("simclr", 32, 3)
    reference = torch.nn.Sequential(
        K.RandomResizedCrop((32, 32), scale=(0.08, 1.0), align_corners=False), K.RandomHorizontalFlip(),
        K.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8), K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=0.5))
    torch.manual_seed(0)
    a = torch.cat([torch.cat(ours(x)) for _ in range(4)])
    b = torch.cat([ours.normalize(reference(x.float() / 255)) for _ in range(8)])
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    for stat in (lambda v: v.mean(dim=(1, 2, 3)), lambda v: v.std(dim=(1, 2, 3)),
                 lambda v: (v[:, 0] - v[:, 2]).abs().mean(dim=(1, 2))):  # brightness, contrast, colourfulness
        qa, qb = stat(a).quantile(q), stat(b).quantile(q)
        assert (qa - qb).abs().max() < 0.08, (qa, qb)


@pytest.mark.parametrize("channels", [1, 3])
def test_simclr_views_take_8_bit_levels_like_a_uint8_pipeline(channels):
    x = (images(64, side=32, seed=2)[:, :channels] * 255).to(torch.uint8)
    for quantize in (True, False):
        aug = build_augment("simclr", 32, channels, quantize=quantize)
        torch.manual_seed(0)
        v = torch.cat(aug(x)) * aug.std + aug.mean  # back to [0, 1]
        off = (v * 255 - (v * 255).round()).abs()
        assert (off.max() < 1e-3) == quantize, off.max()
        assert v.min() >= -1e-6 and v.max() <= 1 + 1e-6
    # same draw with and without: rounding the finished view moves each value by at most half a level
    torch.manual_seed(0)
    aug = build_augment("simclr", 32, channels)
    a = torch.cat(aug(x))
    torch.manual_seed(0)
    b = torch.cat(build_augment("simclr", 32, channels, quantize=False)(x))
    assert ((a - b) * aug.std * 255).abs().max() <= 0.5 + 1e-3
