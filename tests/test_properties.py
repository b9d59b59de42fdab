"""Property tests (hypothesis): readers and augmentations keep their contracts for any size, channel count and
content."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vissl_lite.augment import build_augment
from vissl_lite.data import label_subset
from vissl_lite.data.decode import decode_image, resize_center_crop

FAST = settings(max_examples=25, deadline=None)


@FAST
@given(h=st.integers(1, 80), w=st.integers(1, 80), size=st.integers(1, 48), channels=st.sampled_from([1, 3]),
       seed=st.integers(0, 2**16))
def test_resize_center_crop_shape_dtype_and_range(h, w, size, channels, seed):
    x = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (2, channels, h, w), dtype=np.uint8))
    y = resize_center_crop(x, size)
    assert y.shape == (2, channels, size, size) and y.dtype == torch.uint8
    if h == w == size:
        assert torch.equal(x, y)
    flat = torch.full((1, channels, h, w), int(x[0, 0, 0, 0]), dtype=torch.uint8)
    assert torch.equal(resize_center_crop(flat, size), flat.new_full((1, channels, size, size), int(flat[0, 0, 0, 0])))


@FAST
@given(h=st.integers(1, 40), w=st.integers(1, 40), mode=st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "I;16"]),
       channels=st.sampled_from([1, 3]), size=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_decode_any_file_mode_to_the_asked_shape(tmp_path_factory, h, w, mode, channels, size, seed):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path_factory.mktemp("img") / "x.png"
    img.save(path)
    out = decode_image(path, size, channels)
    assert out.shape == (channels, size, size) and out.dtype == torch.uint8


@FAST
@given(name=st.sampled_from(["simclr", "crop_flip", "eval"]), channels=st.sampled_from([1, 3]),
       size=st.integers(8, 40), batch=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_augment_views_keep_batch_channels_size_and_are_finite(name, channels, size, batch, seed):
    torch.manual_seed(seed)
    aug = build_augment(name, size, channels)
    x = torch.randint(0, 256, (batch, channels, size + 5, size + 5), dtype=torch.uint8)
    views = aug(x)
    assert len(views) == {"simclr": 2, "crop_flip": 1, "eval": 1}[name]
    for v in views:
        assert v.shape == (batch, channels, size, size) and v.dtype == torch.float32 and torch.isfinite(v).all()


@FAST
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=6), fraction=st.floats(0.01, 1.0),
       seed=st.integers(0, 1000))
def test_label_subsets_are_stratified_unique_and_seeded(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    idx = label_subset(labels, fraction=fraction, seed=seed)
    assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)
    per_class = np.bincount(labels[idx], minlength=len(counts))
    assert np.all(per_class >= 1) and np.all(per_class <= counts)
    assert np.all(per_class == np.maximum(1, np.round(fraction * np.array(counts)).astype(int)))
    assert np.array_equal(idx, label_subset(labels, fraction=fraction, seed=seed))
