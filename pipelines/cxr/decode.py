"""DICOM bytes -> a checked, display-ready radiograph in [0, 1] (bright = dense).

The display chain is the standard one: stored values -> modality LUT -> VOI LUT or
window -> MONOCHROME1 inversion. Damaged DICOM gets the codes every DICOM route
shares (aidx.inference.dicom_input); anything that is not a radiograph, or whose
header names another body part, is refused here, with a specific code, before it
reaches a model. What the image itself shows is checked next (content.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from aidx.inference.cohort import study_context
from aidx.inference.dicom_input import (
    DEFAULT_IMAGE_LIMITS,
    DicomCode,
    decode_pixels,
    dicom_error,
    read_image,
    require_modality,
)
from aidx.inference.drift import Value
from aidx.inference.errors import Unprocessable
from aidx.inference.reports import SourceRef
from aidx.inference.settings_sections import ImageLimits
from aidx.pipelines.cxr.content import (
    Projection,
    code_counts,
    percentiles_of_counts,
    projection_from_header,
    stored_spread,
)
from aidx.pipelines.cxr.drift import acquisition
from aidx.pipelines.cxr.full_image import FullImage, FullSource, full_image

RADIOGRAPH_MODALITIES = {"CR", "DX"}
CHEST_BODY_PARTS = {"CHEST", "THORAX", "LUNG", "PORTABLE CHEST"}
MIN_SIDE_PX = 256
ROBUST_WINDOW_PCT = (0.5, 99.5)  # the window of an image without VOI


@dataclass(frozen=True)
class Radiograph:
    image01: np.ndarray  # float32, 2-D, [0, 1], bright = dense
    source: SourceRef
    warnings: list[str] = field(default_factory=list)
    # header and pixel facts the content checks (content.py) read
    body_part_stated: bool = True  # BodyPartExamined present (and a chest, or refused)
    projection: Projection = Projection(view=None, frontal=None, sources=())
    stored_spread: float = 1.0  # the stored values' robust spread / bit range
    # manufacturer, station, kVp, pixel spacing: drift monitoring's (drift.py)
    acquisition: Mapping[str, Value] = field(default_factory=dict)
    # full resolution, before the window (the workspace's): its makings, or itself
    full: FullSource | FullImage | None = None


def check_radiograph(ds: pydicom.Dataset) -> None:
    """Refuse an image the chest X-ray pipeline is not for."""
    require_modality(ds, RADIOGRAPH_MODALITIES, "a radiograph (CR or DX)")
    body_part = str(ds.get("BodyPartExamined", "")).upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        raise Unprocessable(
            f"body part {body_part!r} is not the chest", code="unsupported_body_part"
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise Unprocessable(
            "expected a single-frame greyscale radiograph", code="unsupported_image_type"
        )
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise Unprocessable(
            f"photometric interpretation {photometric!r} is not greyscale",
            code="unsupported_image_type",
        )
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if min(rows, cols) < MIN_SIDE_PX:
        raise Unprocessable(
            f"image is {rows}x{cols} px; at least {MIN_SIDE_PX} px a side is needed",
            code="image_too_small",
        )


def _voi_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The VOI output range, found by sending the stored extremes through the same
    transform (a window or a VOI LUT clips them to its output limits)."""
    bits = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    extremes = apply_modality_lut(np.array([lo, hi], dtype=np.float64), ds)
    ends = apply_voi_lut(np.asarray(extremes, dtype=np.float64), ds)
    return float(np.min(ends)), float(np.max(ends))


def _modality(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    return np.asarray(apply_modality_lut(stored, ds)).astype(np.float64, copy=False)


def _displayed(ds: pydicom.Dataset, values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Modality values -> [0, 1] display values, element by element (in place on one
    new array: the same arithmetic as (values - lo) / span, clip, 1 - x)."""
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = np.asarray(apply_voi_lut(values, ds)).astype(np.float64, copy=False)
    span = hi - lo if hi > lo else 1.0
    image01 = values - lo
    image01 /= span
    np.clip(image01, 0.0, 1.0, out=image01)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        np.subtract(1.0, image01, out=image01)
    return image01.astype(np.float32)


def to_display(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """Stored values -> float32 [0, 1], bright = dense. Integer pixels of up to 16
    bits go through a lookup table of every possible stored value, computed by the
    same chain (modality LUT, VOI LUT or window, inversion): one gather over the
    image instead of several float64 passes, with identical values."""
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2 or not stored.dtype.isnative:
        values = _modality(ds, stored)
        lo, hi = _voi_range(ds) if has_voi else np.percentile(values, ROBUST_WINDOW_PCT)
        return _displayed(ds, values, float(lo), float(hi))
    unsigned = np.dtype(f"u{stored.dtype.itemsize}")
    codes = np.arange(2 ** (8 * stored.dtype.itemsize), dtype=unsigned).view(stored.dtype)
    keys = stored.view(unsigned)
    code_values = _modality(ds, codes)
    if has_voi:
        lo, hi = _voi_range(ds)
    else:  # no VOI given: a robust window over the image's own values
        counts = code_counts(keys, codes.size)
        seen = counts > 0
        lo, hi = percentiles_of_counts(code_values[seen], counts[seen], ROBUST_WINDOW_PCT)
    return _displayed(ds, code_values, lo, hi)[keys]


def stored_values(ds: pydicom.Dataset, limits: ImageLimits = DEFAULT_IMAGE_LIMITS) -> np.ndarray:
    """decode_pixels' stored values. Uncompressed little-endian pixels come as a
    read-only view of the pixel data: pydicom's clearing of the unused high bits
    (Bits Stored < Bits Allocated) copies the image and makes two passes over it,
    though it changes nothing unless those bits are set; only then is it done here,
    by the same shifts."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_encapsulated or not syntax.is_little_endian:
        return decode_pixels(ds, limits)
    ds.pixel_array_options(view_only=True, correct_unused_bits=False)
    raw = decode_pixels(ds, limits)
    shift = int(ds.BitsAllocated) - int(ds.BitsStored)
    if raw.dtype.kind not in "iu" or shift <= 0 or raw.size == 0:
        return raw
    half = 1 << (int(ds.BitsStored) - 1)
    low, high = (-half, half - 1) if raw.dtype.kind == "i" else (0, 2 * half - 1)
    if (raw.dtype.kind == "u" or int(raw.min()) >= low) and int(raw.max()) <= high:
        return raw  # the unused bits are clear (or a sign extension): nothing to clear
    stored = raw.copy()
    np.left_shift(stored, shift, out=stored)
    np.right_shift(stored, shift, out=stored)
    return stored


def source_of(ds: pydicom.Dataset) -> SourceRef:
    def text(keyword: str) -> str | None:
        value = ds.get(keyword)
        return str(value) if value not in (None, "") else None

    return SourceRef(
        patient_id=text("PatientID"),
        study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
        sop_instance_uid=text("SOPInstanceUID"),
        modality=text("Modality"),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        **study_context(ds),
    )


# What pydicom and numpy raise on a header value of the wrong kind (a text where a
# number belongs, two values where one does, a bit depth of 0...)
_GARBLED_HEADER = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError)


def decode_radiograph(data: bytes, limits: ImageLimits = DEFAULT_IMAGE_LIMITS) -> Radiograph:
    ds = read_image(data)
    try:
        return _radiograph(ds, limits)
    except _GARBLED_HEADER as exc:
        raise dicom_error(
            DicomCode.malformed, f"a header value cannot be interpreted ({type(exc).__name__})"
        ) from None


def _radiograph(ds: pydicom.Dataset, limits: ImageLimits) -> Radiograph:
    check_radiograph(ds)
    stored = stored_values(ds, limits)
    if stored.shape != (int(ds.Rows), int(ds.Columns)):
        raise dicom_error(DicomCode.malformed, "decoded pixels do not match Rows x Columns")
    return Radiograph(
        to_display(ds, stored),
        source_of(ds),
        body_part_stated=bool(str(ds.get("BodyPartExamined", "")).strip()),
        projection=projection_from_header(ds),
        stored_spread=stored_spread(stored, int(ds.BitsStored)),
        acquisition=acquisition(ds),
        full=full_image(ds, stored),
    )
