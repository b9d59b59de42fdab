"""One image file to a fixed-size uint8 tensor, and the one windowing step that maps high-bit-depth grayscale
(DICOM, 16-bit PNG/TIFF, float TIFF) to 8 bits.

:func:`decode_image` is where every image file becomes a training or evaluation image; the window helpers
here also sample a set of files to resolve 'dataset' windows and 16-bit sets that hold 8- to 12-bit data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from vissl_lite.data.readers import DECODE_ERRORS, DICOM_EXTENSIONS, DataError


def _pydicom():
    try:
        import pydicom
    except ImportError as e:
        raise DataError("reading DICOM files needs pydicom: pip install 'vissl-lite[medical]' (or pip install "
                        "pydicom)") from e
    return pydicom


WINDOW_HELP = ("'auto' (a DICOM file's own VOI LUT or window tags, an 8-bit one's stored levels, else its 0.5-99.5 "
               "percentile range; 16-bit PNG/TIFF: the full 0-65535 range, or 0-255 for a set whose sampled files "
               "stay below 256; 32-bit float TIFF: its 0.5-99.5 percentile range), 'file' (every "
               "file's own 0.5-99.5 percentile range), 'dataset' (one 0.5-99.5 percentile range of the training "
               "files' values, the same for every file and split) or 'LO,HI' in the files' units (Hounsfield units "
               "for CT, e.g. '-1000,400')")


def parse_window(value) -> str | tuple[float, float]:
    """'auto' | 'file' | 'dataset' | 'LO,HI' (or a pair) -> the mode string or a (lo, hi) tuple of floats."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    elif isinstance(value, str) and value in ("auto", "file", "dataset"):
        return value
    else:
        try:
            lo, hi = (float(v) for v in str(value).split(","))
        except ValueError:
            raise ValueError(f"window {value!r} is not valid; give {WINDOW_HELP}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"window {value!r}: both ends must be finite numbers")
    if not hi > lo:
        raise ValueError(f"window {value!r}: the upper end must be above the lower end")
    return lo, hi


# a file's own display window: a linear (lo, hi) in its values, a function from its values to 0..1 (a DICOM VOI LUT
# or sigmoid window), or None (it has none)
OwnWindow = tuple[float, float] | Callable[[np.ndarray], np.ndarray] | None


def read_high_range(file: Path) -> tuple[np.ndarray, OwnWindow, bool] | None:
    """A grayscale image with more than 8 bits, before any windowing: ``(values, own_window, invert)``.

    - DICOM: modality values (rescale slope/intercept or the modality LUT applied); ``own_window`` is its VOI LUT
      or first window centre/width under its VOI LUT Function (:func:`_dicom_own_window`), its stored levels for an
      8-bit file without them or a rescale, else None; ``invert`` for MONOCHROME1.
    - 16-bit (or 32-bit int) PNG/TIFF: the stored values; ``own_window`` is 0-65535, the 16-bit range (None for a
      32-bit int file with values outside it, e.g. signed Hounsfield units: 'auto' then uses its percentiles).
    - 32-bit float TIFF: the stored values (non-finite ones set to the lowest finite value); no ``own_window``.

    Returns None for 8-bit and colour files, which are already display images and are never windowed.
    """
    if file.suffix.lower() in DICOM_EXTENSIONS:
        return _read_dicom_values(file)
    try:
        with Image.open(file) as im:
            return _high_range_pil(im)
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode image {file} ({e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e


HIGH_RANGE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def _high_range_pil(im: Image.Image) -> tuple[np.ndarray, OwnWindow, bool] | None:
    """:func:`read_high_range` for an opened PIL image; None unless it is 16-bit, 32-bit int or 32-bit float
    grayscale. A float file (e.g. CT in Hounsfield units) has no natural range: 'auto' uses its own percentiles."""
    if im.mode not in HIGH_RANGE_MODES:
        return None
    values = np.asarray(ImageOps.exif_transpose(im), dtype=np.float64)
    if im.mode == "F":
        finite = np.isfinite(values)
        if not finite.all():  # NaN / inf (e.g. outside a scan's field of view): the darkest value
            values = np.where(finite, values, values[finite].min() if finite.any() else 0.0)
        return values, None, False
    if im.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        return values, None, False  # 32-bit int beyond 0-65535 (e.g. signed HU): no format range, like float
    # The format's range for every file alike (not each file's own maximum), so a dark file stays darker than a
    # bright one; a set of 8-bit images stored in 16-bit files is found from a sample of the set (folders.py)
    return values, (0.0, 65535.0), False


def narrow_16bit_max(files: list[Path], samples: int = 32, seed: int = 0) -> int | None:
    """The largest value in up to ``samples`` 16-bit integer PNG/TIFF files of ``files`` when it is at most 4095
    (8-, 10- or 12-bit data stored in 16 bits, which 'auto' maps by the full 0-65535 range and so loads nearly
    black), else None. DICOM (its own window) and unreadable files are not sampled; the files are decoded, so only files
    whose header says 16-bit are read whole."""
    rng = np.random.default_rng(seed)
    top, seen = 0, 0
    for i in np.sort(rng.permutation(len(files))[:samples]):
        f = files[i]
        if f.suffix.lower() in DICOM_EXTENSIONS:
            continue
        try:
            with Image.open(f) as im:
                if im.mode not in HIGH_RANGE_MODES or im.mode == "F":  # integer modes only
                    continue
                top, seen = max(top, int(np.asarray(im).max())), seen + 1
        except DECODE_ERRORS:
            continue
    return top if seen and top <= 4095 else None


def dicom_window_mix(files: list[Path], samples: int = 32, seed: int = 0) -> tuple[int, int]:
    """(with, without): how many of up to ``samples`` grayscale DICOM files of ``files`` carry their own window
    (VOI LUT or WindowCenter/Width) and how many do not (so 'auto' maps those by their own percentiles). Headers
    only; unreadable files are not counted."""
    dicoms = [f for f in files if f.suffix.lower() in DICOM_EXTENSIONS]
    if not dicoms:
        return 0, 0
    pydicom = _pydicom()
    rng = np.random.default_rng(seed)
    own = bare = 0
    for i in np.sort(rng.permutation(len(dicoms))[:samples]):
        try:
            ds = pydicom.dcmread(dicoms[i], stop_before_pixels=True)
        except Exception:  # a broken file is reported when it is decoded
            continue
        if _dicom_colour(ds):
            continue
        if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
            own += 1
        else:
            bare += 1
    return own, bare


def apply_window(values: np.ndarray, lo: float, hi: float, invert: bool = False) -> np.ndarray:
    """Map [lo, hi] linearly to uint8 0-255, clip outside; ``invert`` flips it (MONOCHROME1). Monotone: the order
    of intensities inside the window is kept."""
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    if invert:
        scaled = 1.0 - scaled
    return (scaled * 255 + 0.5).astype(np.uint8)


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    return lo, (hi if hi > lo else lo + 1.0)


def window_image(file: Path, window="auto") -> np.ndarray | None:
    """A high-range grayscale file as uint8 (H, W) through ``window`` (see :data:`WINDOW_HELP`; 'dataset' must be
    resolved to a (lo, hi) pair first, see :func:`dataset_window`); None for 8-bit and colour files."""
    raw = read_high_range(file)
    return None if raw is None else _windowed(raw, window)


def _windowed(raw: tuple[np.ndarray, OwnWindow, bool], window) -> np.ndarray:
    values, own, invert = raw
    if isinstance(window, tuple):
        lo, hi = window
    elif window == "auto" and callable(own):  # a DICOM VOI LUT or sigmoid window: already 0..1
        values, (lo, hi) = own(values), (0.0, 1.0)
    elif window == "auto" and own is not None:
        lo, hi = own
    elif window in ("auto", "file"):
        lo, hi = percentile_window(values)
    else:
        raise ValueError(f"window {window!r} must be resolved to (lo, hi) before decoding")
    return apply_window(values, lo, hi, invert)


def dataset_window(files: list[Path], samples: int = 256, pixels: int = 4096, seed: int = 0,
                   skip: bool = False) -> tuple[float, float]:
    """One 0.5-99.5 percentile window over up to ``samples`` of ``files`` (``pixels`` random values from each):
    every file is then mapped the same way, so intensity differences between files survive. Seeded, so every
    split and every run gets the same window. 8-bit and colour files are not sampled; unreadable ones are a
    :class:`DataError` unless ``skip`` (``--on-bad-file skip``), which leaves them out."""
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in np.sort(rng.permutation(len(files))[:samples])]
    pooled = []
    for f in chosen:
        try:
            raw = read_high_range(f)
        except DataError:
            if not skip:
                raise
            continue
        if raw is not None:
            flat = raw[0].ravel()
            pooled.append(flat[rng.integers(0, flat.size, min(pixels, flat.size))])
    if not pooled:
        raise DataError("window 'dataset' needs 16-bit PNG/TIFF, float TIFF or DICOM grayscale files; these are "
                        "8-bit or colour, which are used as they are")
    return percentile_window(np.concatenate(pooled))


def _dicom_colour(ds) -> bool:
    """Three samples per pixel (RGB, YBR), or one index per pixel into a colour palette (PALETTE COLOR)."""
    return (int(ds.get("SamplesPerPixel", 1)) == 3
            or str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR")


def _read_dicom_values(file: Path) -> tuple[np.ndarray, OwnWindow, bool] | None:
    return _dicom_high_range(*_dicom_pixels(file))


def _dicom_pixels(file: Path):
    """``(dataset, pixel array)`` of a single-frame DICOM file; a :class:`DataError` naming the file otherwise."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(file)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise DataError(f"{file} holds {frames} frames; vissl-lite reads one image per file. Split it into "
                            "single-frame files first (e.g. with pydicom), or leave it out")
        return ds, ds.pixel_array
    except DataError:
        raise
    except Exception as e:  # pydicom raises many types for broken files and missing pixel data
        raise DataError(f"cannot read DICOM {file} ({type(e).__name__}: {e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e


def _dicom_high_range(ds, arr: np.ndarray) -> tuple[np.ndarray, OwnWindow, bool] | None:
    """:func:`read_high_range` for a read DICOM dataset; None for colour."""
    from pydicom.pixels import apply_modality_lut

    if _dicom_colour(ds):
        return None
    values = apply_modality_lut(arr, ds).astype(np.float64)
    own = _dicom_own_window(ds)
    if own is None and int(ds.get("BitsStored", 16)) <= 8 and _identity_modality(ds):  # a display image as stored
        own = (0.0, float(2 ** int(ds.BitsStored) - 1))
    invert = str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1"
    return values, own, invert


def _dicom_own_window(ds) -> OwnWindow:
    """The file's own VOI transform (DICOM PS3.3 C.11.2), from modality values to display: its first VOI LUT; else
    its first window centre/width under its VOI LUT Function (LINEAR: ends at c - 0.5 -+ (w - 1) / 2; LINEAR_EXACT:
    c -+ w / 2; SIGMOID: 1 / (1 + exp(-4 (x - c) / w))). A linear window is a (lo, hi) pair, the others a function
    to 0..1. None without either, or with a width the function does not allow (< 1 for LINEAR, <= 0 otherwise)."""
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_voi

    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        first, entries = int(item.LUTDescriptor[1]), int(item.LUTDescriptor[0]) or 2**16
        table = apply_voi(np.arange(first, first + entries), ds).astype(np.float64)  # every entry, in order
        lo, span = float(table.min()), max(float(table.max() - table.min()), 1.0)
        return lambda v: (apply_voi(np.rint(v).astype(np.int64), ds) - lo) / span
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    centre, width = ds.WindowCenter, ds.WindowWidth
    centre = float(centre[0] if isinstance(centre, MultiValue) else centre)
    width = float(width[0] if isinstance(width, MultiValue) else width)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if not (np.isfinite(centre) and np.isfinite(width)) or width < (1 if function == "LINEAR" else 1e-12):
        return None
    if function == "SIGMOID":
        def sigmoid(v: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore"):
                return 1.0 / (1.0 + np.exp(-4.0 * (v - centre) / width))
        return sigmoid
    if function == "LINEAR_EXACT":
        return centre - width / 2, centre + width / 2
    return centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2


def _identity_modality(ds) -> bool:
    return ("ModalityLUTSequence" not in ds and float(ds.get("RescaleSlope", 1) or 1) == 1
            and float(ds.get("RescaleIntercept", 0) or 0) == 0)


def read_dicom(file: Path, window="auto") -> np.ndarray:
    """One DICOM image as uint8 (H, W) (grayscale) or (H, W, 3) (colour), windowed for display:

    1. stored values -> modality values (rescale slope and intercept, or the modality LUT);
    2. ``window`` (see :data:`WINDOW_HELP`); by default the file's VOI LUT, or its first window centre/width, or
       (8 bits stored, no rescale) its stored levels as they are, or else its 0.5-99.5 percentile range, mapped
       linearly to 0-255 (values outside are clipped);
    3. MONOCHROME1 (higher = darker) is inverted so bright means dense for every file.

    Multi-frame files are refused: each frame would be a separate image. Colour files are scaled from their bit
    depth to 8 bits, PALETTE COLOR ones looked up in their palette first. The file is read once either way.
    """
    ds, arr = _dicom_pixels(file)
    raw = _dicom_high_range(ds, arr)
    if raw is not None:
        return _windowed(raw, window)
    if arr.ndim == 2:  # PALETTE COLOR: indices into the file's red, green and blue tables
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except Exception as e:  # a missing or malformed palette
            raise DataError(f"cannot apply the colour palette of DICOM {file} ({type(e).__name__}: {e}); remove or "
                            "replace the file, or pass --on-bad-file skip") from e
        top = float(np.iinfo(arr.dtype).max)  # the palette's entries are 8 or 16 bits
    else:  # RGB, or YBR converted to RGB by pydicom
        top = float(2 ** int(ds.get("BitsStored", 8)) - 1)
    return np.clip(arr.astype(np.float64) / top * 255 + 0.5, 0, 255).astype(np.uint8)


def image_channels(file: Path) -> int:
    """1 for grayscale files (L, I;16, I, F, 1, LA; grayscale DICOM), else 3."""
    if file.suffix.lower() in DICOM_EXTENSIONS:
        try:
            ds = _pydicom().dcmread(file, stop_before_pixels=True)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"cannot read DICOM {file} ({e}); remove or replace the file, or pass --on-bad-file "
                            "skip") from e
        return 3 if _dicom_colour(ds) else 1
    try:
        with Image.open(file) as im:
            return 1 if im.mode in ("L", "LA", "1", *HIGH_RANGE_MODES) else 3
    except DECODE_ERRORS as e:
        raise DataError(f"cannot open image {file} ({e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e


def check_image(file: Path) -> None:
    """Raise DataError naming ``file`` unless it decodes completely (a header check alone misses truncated
    JPEGs)."""
    if file.suffix.lower() in DICOM_EXTENSIONS:
        read_dicom(file)
        return
    try:
        with Image.open(file) as im:
            im.load()
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode image {file} ({e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e


def decode_image(file: Path, size: int, channels: int, window="auto") -> torch.Tensor:
    """Decode one file to uint8 ``(channels, size, size)``: EXIF rotation applied, short side resized to ``size``
    (antialiased), centre crop. Grayscale files with more than 8 bits (DICOM, 16-bit PNG/TIFF) keep their values
    until this one windowing step, ``window`` (see :data:`WINDOW_HELP`), maps them to 8 bits."""
    mode = "L" if channels == 1 else "RGB"
    try:
        if file.suffix.lower() in DICOM_EXTENSIONS:
            im = Image.fromarray(read_dicom(file, window)).convert(mode)
        else:
            with Image.open(file) as im:  # opened once: 16-bit files are windowed, others converted
                raw = _high_range_pil(im)
                if raw is not None:
                    im = Image.fromarray(_windowed(raw, window)).convert(mode)
                else:
                    im = ImageOps.exif_transpose(im).convert(mode)
        arr = np.asarray(im, dtype=np.uint8)
    except DataError:  # already names the file and the fix (e.g. a multi-frame DICOM)
        raise
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode image {file} ({e}); remove or replace the file, or pass "
                        "--on-bad-file skip") from e
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)  # (C, H, W)
    return resize_center_crop(t[None], size)[0]


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size): resize the short side to ``size``, centre-crop."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    y = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    y = y[..., top:top + size, left:left + size]
    return y.round_().clamp_(0, 255).to(torch.uint8)
