"""DICOM bytes a client sent -> a dataset, or an error with one of the shared codes.

Every route that takes DICOM (POST /v1/cxr, POST /v1/ct, the C-STORE intake, DICOMweb
pull through the pipelines) reads it here, so the same damaged file gets the same code
whichever way it came in:

  not_dicom               not a DICOM Part 10 file (no DICM preamble)
  truncated_dicom         the file ends early: a value shorter than its declared length,
                          a missing delimiter, no data set, an image object without pixels
  malformed_dicom         the stream cannot be parsed
  undecodable_pixel_data  the pixels cannot be decoded (codec, transfer syntax)
  no_pixel_data           a well-formed object that holds no image (an SR, a KO...)
  unsupported_modality    an image of a modality the route is not for
  too_many_pixels         more pixels or frames than the image limits (AIDX_IMAGE_*) allow
  pixel_data_mismatch     the codestream declares another size than Rows x Columns
  deflated_too_large      a Deflated Explicit VR Little Endian file inflates past
                          MAX_INFLATED_BYTES (checked before pydicom inflates it)

The first four are damaged input (BadRequest); too_many_pixels is a 413 (the limits are
checked on the header, before anything is decoded); the others well-formed input the
route is not made for (Unprocessable). Inside a series upload, `instance` (the 1-based
position of the file in the upload) says which file it was.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Collection
from enum import StrEnum
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from aidx.inference.codestream import codestream_size
from aidx.inference.errors import AidxError, BadRequest, PayloadTooLarge, Unprocessable
from aidx.inference.settings_sections import ImageLimits

_UNDEFINED_LENGTH = 0xFFFFFFFF


class DicomCode(StrEnum):
    not_dicom = "not_dicom"
    truncated = "truncated_dicom"
    malformed = "malformed_dicom"
    undecodable_pixel_data = "undecodable_pixel_data"
    no_pixel_data = "no_pixel_data"
    unsupported_modality = "unsupported_modality"
    too_many_pixels = "too_many_pixels"
    pixel_data_mismatch = "pixel_data_mismatch"
    deflated_too_large = "deflated_too_large"


DEFAULT_IMAGE_LIMITS = ImageLimits()

_ERROR_CLASS: dict[DicomCode, type[AidxError]] = {
    DicomCode.not_dicom: BadRequest,
    DicomCode.truncated: BadRequest,
    DicomCode.malformed: BadRequest,
    DicomCode.undecodable_pixel_data: BadRequest,
    DicomCode.no_pixel_data: Unprocessable,
    DicomCode.unsupported_modality: Unprocessable,
    DicomCode.too_many_pixels: PayloadTooLarge,
    DicomCode.pixel_data_mismatch: Unprocessable,
    DicomCode.deflated_too_large: PayloadTooLarge,
}

# pydicom inflates a deflated data set whole, in memory: a few kilobytes can inflate to
# gigabytes. The largest real image objects (a 4300 x 4300 x 16-bit CR, a multiframe
# instance) are well under this.
MAX_INFLATED_BYTES = 256 * 1024 * 1024
_DEFLATED = b"1.2.840.10008.1.2.1.99"
_INFLATE_CHUNK = 1 << 20


def dicom_error(
    code: DicomCode, message: str, *, instance: int | None = None, **details: Any
) -> AidxError:
    """The error for `code`; with `instance`, the message and details name the file."""
    if instance is not None:
        message = f"instance {instance}: {message}"
        details["instance"] = instance
    return _ERROR_CLASS[code](message, code=code.value, **details)


def _ends_early(ds: Dataset) -> bool:
    """pydicom reads a cut file without complaint: a value comes back shorter than the
    length its header declares, or the data set is empty."""
    if len(ds) == 0:
        return True
    for group in (getattr(ds, "file_meta", None) or Dataset(), ds):
        for elem in group.elements():
            if (
                isinstance(elem, RawDataElement)
                and elem.length != _UNDEFINED_LENGTH
                and len(elem.value or b"") < elem.length
            ):
                return True
    return False


def _deflated_body_offset(data: bytes) -> int | None:
    """Where the deflated data set starts, if the file meta names the Deflated
    transfer syntax (the meta's group length says where the meta ends)."""
    if data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        return None
    (group_length,) = struct.unpack("<I", data[140:144])
    end = 144 + group_length
    return end if _DEFLATED in data[144:end] else None


def _check_inflated_size(data: bytes, instance: int | None) -> None:
    """Inflate a deflated file's data set in chunks, keeping nothing, and refuse it
    once it passes MAX_INFLATED_BYTES: the bound pydicom's own inflate lacks."""
    start = _deflated_body_offset(data)
    if start is None:
        return
    inflater, total, pending = zlib.decompressobj(-zlib.MAX_WBITS), 0, data[start:]
    try:
        while pending and total <= MAX_INFLATED_BYTES:
            total += len(inflater.decompress(pending, _INFLATE_CHUNK))
            pending = inflater.unconsumed_tail
    except zlib.error:
        return  # damaged: pydicom's own read gives it its code
    if total > MAX_INFLATED_BYTES:
        raise dicom_error(
            DicomCode.deflated_too_large,
            f"the deflated data set inflates past {MAX_INFLATED_BYTES} bytes",
            instance=instance,
        )


def read_dicom(
    data: bytes, *, instance: int | None = None, stop_before_pixels: bool = False
) -> Dataset:
    """Parse a DICOM Part 10 file, or raise not_dicom / truncated_dicom / malformed_dicom
    (deflated_too_large before a deflated data set is inflated past its bound)."""
    _check_inflated_size(data, instance)
    stream = io.BytesIO(data)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(stream, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise dicom_error(
            DicomCode.not_dicom,
            "the file is not a DICOM Part 10 file (no DICM preamble)",
            instance=instance,
        ) from None
    except Exception as exc:  # pydicom raises many types on a damaged stream
        if stream.tell() >= len(data):  # it failed for want of bytes
            raise dicom_error(
                DicomCode.truncated, "the DICOM file ends early (truncated)", instance=instance
            ) from None
        raise dicom_error(
            DicomCode.malformed,
            f"the DICOM file could not be parsed ({type(exc).__name__})",
            instance=instance,
        ) from None
    try:
        cut = any("End of file" in str(w.message) for w in caught) or _ends_early(ds)
    except Exception as exc:  # an element pydicom reads lazily is damaged (e.g. its VR)
        raise dicom_error(
            DicomCode.malformed,
            f"the DICOM file could not be parsed ({type(exc).__name__})",
            instance=instance,
        ) from None
    if cut:
        raise dicom_error(
            DicomCode.truncated, "the DICOM file ends early (truncated)", instance=instance
        )
    return ds


def require_image(ds: Dataset, *, instance: int | None = None) -> None:
    """Refuse an object without pixels: an image storage object without them was cut
    short; any other object (an SR, a key object note) holds no image."""
    if "PixelData" in ds:
        return
    sop_class = ds.get("SOPClassUID")
    if isinstance(sop_class, UID) and "Image Storage" in sop_class.name:
        raise dicom_error(
            DicomCode.truncated,
            "an image object without pixel data: the file is truncated",
            instance=instance,
        )
    raise dicom_error(DicomCode.no_pixel_data, "the DICOM object holds no image", instance=instance)


def read_image(data: bytes, *, instance: int | None = None) -> Dataset:
    """A parsed DICOM object that holds pixel data, or the shared code for its damage."""
    ds = read_dicom(data, instance=instance)
    require_image(ds, instance=instance)
    return ds


def require_modality(
    ds: Dataset, allowed: Collection[str], what: str, *, instance: int | None = None
) -> str:
    """The object's modality (upper case) if it is one of `allowed`; `what` names them."""
    modality = str(ds.get("Modality", "")).upper()
    if modality not in allowed:
        raise dicom_error(
            DicomCode.unsupported_modality,
            f"modality {modality or 'missing'!r} is not {what}",
            instance=instance,
            modality=modality,
        )
    return modality


def _header_int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        raise dicom_error(DicomCode.malformed, f"{keyword} is not a number") from None


def check_pixel_budget(
    ds: Dataset, limits: ImageLimits = DEFAULT_IMAGE_LIMITS, *, instance: int | None = None
) -> None:
    """Refuse, before decoding, an image whose header declares more pixels or frames
    than `limits`, or whose compressed frames declare another size than the header."""
    rows, columns = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
    frames = _header_int(ds, "NumberOfFrames", 1)
    frame_pixels = rows * columns
    if frame_pixels > limits.max_frame_pixels or frames > limits.max_frames:
        raise dicom_error(
            DicomCode.too_many_pixels,
            f"the image declares {frames} frame(s) of {rows} x {columns} px; the limits are "
            f"{limits.max_frame_pixels} px a frame and {limits.max_frames} frames",
            instance=instance, rows=rows, columns=columns, frames=frames,
        )  # fmt: skip
    if frame_pixels * frames > limits.max_total_pixels:
        raise dicom_error(
            DicomCode.too_many_pixels,
            f"the image declares {frame_pixels * frames} px in all; the limit is "
            f"{limits.max_total_pixels}",
            instance=instance,
        )
    _check_codestreams(ds, rows, columns, frames, instance)


def _check_codestreams(
    ds: Dataset, rows: int, columns: int, frames: int, instance: int | None
) -> None:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not UID(syntax).is_encapsulated or "PixelData" not in ds:
        return
    samples = _header_int(ds, "SamplesPerPixel", 1)
    try:
        for frame in generate_frames(ds.PixelData, number_of_frames=frames):
            size = codestream_size(frame, syntax)
            if size is None:
                return  # a syntax without a size header (RLE): decoders allocate Rows x Columns
            if (size.rows, size.columns) != (rows, columns) or size.components > max(samples, 1):
                raise dicom_error(
                    DicomCode.pixel_data_mismatch,
                    f"a frame's codestream declares {size.rows} x {size.columns} px and "
                    f"{size.components} component(s); the header says {rows} x {columns}",
                    instance=instance,
                )
    except (ValueError, struct.error) as exc:
        raise dicom_error(
            DicomCode.undecodable_pixel_data, f"the pixel data cannot be read: {exc}",
            instance=instance,
        ) from None  # fmt: skip


def decode_pixels(
    ds: Dataset, limits: ImageLimits = DEFAULT_IMAGE_LIMITS, *, instance: int | None = None
) -> np.ndarray:
    """All frames' stored values, once the header and the codestreams are within
    `limits`; a codec failure is the client's data, not a crash."""
    check_pixel_budget(ds, limits, instance=instance)
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        raise dicom_error(
            DicomCode.undecodable_pixel_data,
            f"the pixel data could not be decoded ({type(exc).__name__}); "
            "the transfer syntax may not be supported",
            instance=instance,
        ) from None
