"""DICOM: files written with pydicom in the test; rescale, windowing, MONOCHROME1, multi-frame, and a folder of
DICOM files through pretraining and the probe with no conversion step."""

import json
import warnings

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="DICOM support is the optional 'medical' extra (pip install pydicom)")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from vissl_lite.cli import main  # noqa: E402
from vissl_lite.data import DataError, load_split  # noqa: E402
from vissl_lite.data.decode import (  # noqa: E402
    decode_image,
    dicom_window_mix,
    image_channels,
    read_dicom,
    read_high_range,
)


def write_dicom(path, pixels, slope=1.0, intercept=0.0, window=None, photometric="MONOCHROME2", frames=1, bits=16,
                function=None, voi_lut=None):
    """A CT-like 16-bit unsigned DICOM file (``bits=8``: an 8-bit one); ``function``: its VOI LUT Function;
    ``voi_lut``: (first value mapped, table) for a VOI LUT Sequence of 16-bit entries."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    pixels = np.asarray(pixels, dtype=np.uint16 if bits == 16 else np.uint8)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if function:
        ds.VOILUTFunction = function
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", [len(voi_lut[1]), voi_lut[0], 16])  # LUT Descriptor: entries, first, bits
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut[1]])  # LUT Data
        ds.VOILUTSequence = Sequence([item])
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_linear(x, c, w):
    """DICOM PS3.3 C.11.2.1.2.1, the LINEAR window function, as the standard writes it, to 0..255."""
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    return np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 255.0, y))


def test_rescale_then_window(tmp_path):
    # stored 824..1224 -> HU = 2 * stored - 2048 = -400..400; window centre 0, width 400 shows about -200..200
    stored = np.array([[824, 924, 1024], [1074, 1124, 1224], [933, 1122, 1123]])  # row 3: LINEAR, not c -+ w/2
    out = read_dicom(write_dicom(tmp_path / "ct.dcm", stored, slope=2, intercept=-2048, window=(0, 400)))
    hu = 2 * stored - 2048
    assert out.dtype == np.uint8 and np.array_equal(out, (dicom_linear(hu, 0, 400) + 0.5).astype(np.uint8))
    assert out[0, 0] == 0 and out[1, 2] == 255 and out[0, 2] == 128  # clipped below, clipped above, the centre


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_the_voi_lut_function_is_followed(tmp_path, function):
    hu = np.array([[-400, -200, -50], [0, 60, 200], [300, 399, -399]])
    out = read_dicom(write_dicom(tmp_path / "ct.dcm", hu + 1024, intercept=-1024, window=(0, 400), function=function))
    if function == "LINEAR_EXACT":  # C.11.2.1.3.2: ends at c -+ w/2
        expected = np.clip((hu + 200) / 400, 0, 1) * 255
    else:  # C.11.2.1.3.1: not clipped, a smooth S through the centre
        expected = 255 / (1 + np.exp(-4 * hu / 400))
    assert np.array_equal(out, (expected + 0.5).astype(np.uint8))
    if function == "SIGMOID":
        assert 0 < out[0, 0] < out[1, 0] == 128 < out[2, 1] < 255  # nothing clipped inside -400..400


def test_a_voi_lut_sequence_is_applied_under_auto_and_other_windows_see_modality_values(tmp_path):
    table = np.arange(101) ** 2  # 16-bit entries 0..10000 for inputs 100..200: a curve, not a line
    stored = np.array([[50, 100, 125], [150, 175, 200], [201, 300, 160]])
    path = write_dicom(tmp_path / "dx.dcm", stored, window=(150, 10), voi_lut=(100, table))  # the LUT comes first
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "VOI LUT on a float input" warning from pydicom
        out = read_dicom(path)
    expected = table[np.clip(stored, 100, 200) - 100] / 10000 * 255 + 0.5
    assert np.array_equal(out, expected.astype(np.uint8))
    values, _, _ = read_high_range(path)
    assert np.array_equal(values, stored)  # 'file', 'dataset' and LO,HI work on modality values, not the LUT's
    assert np.array_equal(read_dicom(path, window=(100, 200)),
                          (np.clip((stored - 100) / 100, 0, 1) * 255 + 0.5).astype(np.uint8))


def test_a_window_width_the_function_does_not_allow_is_ignored(tmp_path):
    ramp = np.arange(64).reshape(8, 8) * 50
    bare = read_dicom(write_dicom(tmp_path / "bare.dcm", ramp))
    assert np.array_equal(read_dicom(write_dicom(tmp_path / "w0.dcm", ramp, window=(1000, 0))), bare)


def test_monochrome1_is_inverted_and_no_window_uses_percentiles(tmp_path):
    ramp = np.arange(64).reshape(8, 8) * 50
    mono2 = read_dicom(write_dicom(tmp_path / "m2.dcm", ramp))
    mono1 = read_dicom(write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1"))
    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))
    flat = mono2.flatten().astype(int)
    assert flat.tolist() == sorted(flat.tolist()) and flat[0] == 0 and flat[-1] == 255  # order kept, range used


def test_multiframe_and_broken_files_are_named(tmp_path):
    two = np.zeros((2, 4, 4))
    with pytest.raises(DataError, match="2 frames"):
        read_dicom(write_dicom(tmp_path / "cine.dcm", two, frames=2))
    with pytest.raises(DataError, match="2 frames") as e:  # the reader's message as it is, not wrapped again
        decode_image(tmp_path / "cine.dcm", 8, 1)
    assert "cannot decode" not in str(e.value) and str(e.value).count("cine.dcm") == 1
    (tmp_path / "bad.dcm").write_bytes(b"DICM but not really")
    with pytest.raises(DataError, match="bad.dcm"):
        decode_image(tmp_path / "bad.dcm", 8, 1)


def secondary_capture() -> Dataset:
    """An empty secondary-capture dataset with its file meta, for colour files built field by field."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    return ds


def test_colour_dicom_is_scaled_not_windowed_and_read_once(tmp_path, monkeypatch):
    rgb = np.random.default_rng(0).integers(0, 4096, (5, 6, 3)).astype(np.uint16)  # 12-bit RGB
    ds = secondary_capture()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 5, 6, 3, "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(tmp_path / "photo.dcm", enforce_file_format=True)
    reads = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: reads.append(a) or real(*a, **k))
    out = read_dicom(tmp_path / "photo.dcm")
    assert len(reads) == 1
    expected = (rgb.astype(np.float64) / 4095 * 255 + 0.5).astype(np.uint8)  # the bit depth, not the content
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8 and np.array_equal(out, expected)


def test_a_palette_colour_dicom_is_looked_up_in_its_palette_and_counts_as_colour(tmp_path):
    index = np.random.default_rng(1).integers(0, 256, (4, 5)).astype(np.uint8)
    palette = {"Red": np.arange(256) * 257, "Green": (255 - np.arange(256)) * 257, "Blue": np.full(256, 32768)}
    ds = secondary_capture()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 5, 1, "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for colour, table in palette.items():
        ds.add_new(pydicom.datadict.tag_for_keyword(f"{colour}PaletteColorLookupTableDescriptor"), "US",
                   [256, 0, 16])
        ds.add_new(pydicom.datadict.tag_for_keyword(f"{colour}PaletteColorLookupTableData"), "OW",
                   table.astype("<u2").tobytes())
    ds.PixelData = index.tobytes()
    path = tmp_path / "pal" / "colour.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    out = read_dicom(path)
    rgb = np.stack([palette[c][index] for c in ("Red", "Green", "Blue")], axis=-1)
    assert out.shape == (4, 5, 3) and np.array_equal(out, (rgb / 65535 * 255 + 0.5).astype(np.uint8))
    assert image_channels(path) == 3 and dicom_window_mix([path]) == (0, 0)  # not a grayscale file without a window


def test_a_dicom_folder_pretrains_and_probes_with_no_conversion(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "scans"
    for c, level in (("normal", 300), ("lesion", 3000)):
        for i in range(12):
            img = rng.integers(0, 200, (20, 20)) + level
            write_dicom(root / c / f"{i}.dcm", img, slope=1, intercept=-1024, window=(500, 3000))
    train = load_split(str(root), "train", 16, progress=False)
    assert train.channels == 1 and train.num_classes == 2 and train.images.shape[1:] == (1, 16, 16)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(root), "--out", str(out), "--image-size", "16", "--batch-size", "8",
                 "--max-steps", "2", "--probe-epochs", "5", "--knn-k", "3", "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # one window for every file keeps the two intensity levels apart (a per-file percentile window would not)
    assert m["eval"]["linear_probe"]["top1"] == 100.0


def test_a_folder_mixing_windowed_and_bare_files_or_only_bare_ones_gets_a_note(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        write_dicom(tmp_path / "mixed" / f"{i}.dcm", rng.integers(0, 4000, (12, 12)),
                    window=(1000, 2000) if i % 3 else None)
        write_dicom(tmp_path / "same" / f"{i}.dcm", rng.integers(0, 4000, (12, 12)), window=(1000, 2000))
        write_dicom(tmp_path / "bare" / f"{i}.dcm", rng.integers(0, 4000, (12, 12)))
    mixed = load_split(str(tmp_path / "mixed"), "train", 8, progress=False)
    assert "of 6 sampled DICOM files, 4 carry their own window" in mixed.window_note and "2 do not" in \
        mixed.window_note
    assert load_split(str(tmp_path / "mixed"), "train", 8, progress=False, window="dataset").window_note == ""
    assert load_split(str(tmp_path / "same"), "train", 8, progress=False).window_note == ""
    bare = load_split(str(tmp_path / "bare"), "train", 8, progress=False).window_note  # all stretched per file
    assert "none of 6 sampled DICOM files carries a window" in bare and "--window dataset" in bare
    assert load_split(str(tmp_path / "bare"), "train", 8, progress=False, window="0,4000").window_note == ""


def test_missing_pydicom_says_how_to_install(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "x.dcm", np.zeros((4, 4)))
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)
    with pytest.raises(DataError, match=r"vissl-lite\[medical\]"):
        read_dicom(path)


def test_an_8bit_dicom_keeps_its_levels_under_auto_and_monochrome1_still_inverts(tmp_path):
    """An 8-bit DICOM is a display image, like an 8-bit PNG: 'auto' keeps its stored levels (50-150 stays 50-150,
    not stretched to 0-255 by its percentiles); MONOCHROME1 is still inverted; an explicit window still applies."""
    levels = np.linspace(50, 150, 64).round().reshape(8, 8)
    plain = read_dicom(write_dicom(tmp_path / "us.dcm", levels, bits=8))
    assert np.array_equal(plain, levels.astype(np.uint8))
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", levels, bits=8, photometric="MONOCHROME1"))
    assert np.array_equal(inverted.astype(int), 255 - levels.astype(int))
    stretched = read_dicom(tmp_path / "us.dcm", "file")
    assert stretched.min() == 0 and stretched.max() == 255
    # 8 bits with a rescale are modality values, not display levels: their percentiles, as before
    rescaled = read_dicom(write_dicom(tmp_path / "ct8.dcm", levels, bits=8, slope=2, intercept=-100))
    assert rescaled.min() == 0 and rescaled.max() == 255
