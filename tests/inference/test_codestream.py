"""The size a compressed frame's own header declares, read without decoding, and the
pixel limits checked on it and on the DICOM header before anything is decoded."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from aidx.inference.codestream import CodestreamSize, codestream_size, j2k_size, jpeg_size
from aidx.inference.dicom_input import check_pixel_budget, decode_pixels
from aidx.inference.errors import AidxError
from aidx.inference.settings_sections import ImageLimits

from ..security.bombs import j2k_dicom


def test_jpeg_size_is_read_from_the_start_of_frame_segment() -> None:
    out = io.BytesIO()
    Image.fromarray(np.zeros((30, 50), dtype=np.uint8)).save(out, format="JPEG")
    assert jpeg_size(out.getvalue()) == CodestreamSize(rows=30, columns=50, components=1)
    assert codestream_size(out.getvalue(), "1.2.840.10008.1.2.4.50") == jpeg_size(out.getvalue())


def test_j2k_size_is_read_from_siz() -> None:
    ds = pydicom.dcmread(j2k_dicom_bytes(header_px=300, codestream_px=300))
    assert check_pixel_budget(ds) is None  # consistent: nothing to refuse


def j2k_dicom_bytes(*, header_px: int, codestream_px: int) -> io.BytesIO:
    return io.BytesIO(j2k_dicom(header_px=header_px, codestream_px=codestream_px))


def test_damaged_codestream_headers_raise_value_error() -> None:
    with pytest.raises(ValueError):
        jpeg_size(b"not a jpeg")
    with pytest.raises(ValueError):
        j2k_size(b"\xff\x4f\xff\x51\x00")  # SIZ cut short
    assert codestream_size(b"anything", "1.2.840.10008.1.2.5") is None  # RLE: no size header


@pytest.mark.parametrize(
    ("header_px", "codestream_px", "status", "code"),
    [(12000, 12000, "payload_too_large", "too_many_pixels"),
     (512, 12000, "unprocessable", "pixel_data_mismatch"),
     (512, 256, "unprocessable", "pixel_data_mismatch")],
)  # fmt: skip
def test_pixel_limits_are_checked_before_decoding(
    header_px: int, codestream_px: int, status: str, code: str
) -> None:
    ds = pydicom.dcmread(j2k_dicom_bytes(header_px=header_px, codestream_px=codestream_px))
    with pytest.raises(AidxError) as caught:
        decode_pixels(ds)
    assert (caught.value.kind.value, caught.value.code) == (status, code)


def test_frame_and_total_limits_are_settings() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # 128 x 128, uncompressed
    decode_pixels(ds, ImageLimits(max_frame_pixels=128 * 128))
    for limits in (ImageLimits(max_frame_pixels=128 * 128 - 1), ImageLimits(max_total_pixels=100)):
        with pytest.raises(AidxError, match="limit") as caught:
            decode_pixels(ds, limits)
        assert caught.value.code == "too_many_pixels"
    ds.NumberOfFrames = 5
    with pytest.raises(AidxError) as caught:
        check_pixel_budget(ds, ImageLimits(max_frames=4))
    assert caught.value.code == "too_many_pixels"
