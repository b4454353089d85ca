"""DICOM bytes -> a checked, display-ready radiograph in [0, 1] (bright = dense).

The display chain is the standard one: stored values -> modality LUT -> VOI LUT or
window -> MONOCHROME1 inversion. Anything that is not a chest radiograph is refused
here, with a specific code, before it reaches a model.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)

from aidx.inference.errors import BadRequest, Unprocessable
from aidx.inference.reports import SourceRef

RADIOGRAPH_MODALITIES = {"CR", "DX"}
CHEST_BODY_PARTS = {"CHEST", "THORAX", "LUNG", "PORTABLE CHEST"}
MIN_SIDE_PX = 256
IMAGE_SOP_CLASSES = {
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
}


@dataclass(frozen=True)
class Radiograph:
    image01: np.ndarray  # float32, 2-D, [0, 1], bright = dense
    source: SourceRef
    warnings: list[str] = field(default_factory=list)


def read_dataset(data: bytes) -> pydicom.Dataset:
    """Parse a DICOM Part 10 file; anything unreadable is the client's 400."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        raise BadRequest(
            "the body is not a DICOM Part 10 file (no DICM preamble)", code="not_dicom"
        ) from None
    except Exception as exc:  # pydicom raises many types on a damaged stream
        raise BadRequest(
            f"the DICOM file could not be parsed ({type(exc).__name__}); it may be truncated",
            code="malformed_dicom",
        ) from None
    if any("End of file" in str(w.message) for w in caught):
        raise BadRequest("the DICOM file ends early (truncated)", code="truncated_dicom")
    return ds


def check_radiograph(ds: pydicom.Dataset) -> list[str]:
    """Refuse what the chest X-ray pipeline is not for; return soft warnings."""
    modality = str(ds.get("Modality", "")).upper()
    if modality not in RADIOGRAPH_MODALITIES:
        raise Unprocessable(
            f"modality {modality or 'missing'!r} is not a radiograph (CR or DX)",
            code="unsupported_modality",
        )
    if "PixelData" not in ds:
        if str(ds.get("SOPClassUID", "")) in IMAGE_SOP_CLASSES:
            raise BadRequest(
                "an image object without pixel data: the file is truncated",
                code="truncated_dicom",
            )
        raise Unprocessable("the DICOM object holds no image", code="no_pixel_data")
    notes = []
    body_part = str(ds.get("BodyPartExamined", "")).upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        raise Unprocessable(
            f"body part {body_part!r} is not the chest", code="unsupported_body_part"
        )
    if not body_part:
        notes.append("BodyPartExamined is absent; assumed chest")
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
    return notes


def decode_pixels(ds: pydicom.Dataset) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        raise BadRequest(
            f"the pixel data could not be decoded ({type(exc).__name__}); "
            "the file may be truncated or use an unsupported transfer syntax",
            code="undecodable_pixel_data",
        ) from None


def _voi_range(ds: pydicom.Dataset, modality_values: np.ndarray) -> tuple[float, float]:
    """The VOI output range, found by sending the stored extremes through the same
    transform (a window or a VOI LUT clips them to its output limits)."""
    bits = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    extremes = apply_modality_lut(np.array([lo, hi], dtype=np.float64), ds)
    ends = apply_voi_lut(np.asarray(extremes, dtype=np.float64), ds)
    return float(np.min(ends)), float(np.max(ends))


def to_display(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    values = apply_modality_lut(stored, ds).astype(np.float64)
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    if has_voi:
        values = apply_voi_lut(values, ds).astype(np.float64)
        lo, hi = _voi_range(ds, values)
    else:  # no VOI given: a robust window over the image's own values
        lo, hi = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    span = hi - lo if hi > lo else 1.0
    image01 = np.clip((values - lo) / span, 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        image01 = 1.0 - image01
    return image01.astype(np.float32)


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
    )


def decode_radiograph(data: bytes) -> Radiograph:
    ds = read_dataset(data)
    notes = check_radiograph(ds)
    stored = decode_pixels(ds)
    if stored.shape != (int(ds.Rows), int(ds.Columns)):
        raise BadRequest("decoded pixels do not match Rows x Columns", code="malformed_dicom")
    return Radiograph(to_display(ds, stored), source_of(ds), notes)
