"""A deflated DICOM file is inflated by pydicom whole and in memory: a few hundred
kilobytes can declare gigabytes. read_dicom refuses it before pydicom inflates it."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage

from aidx.inference.dicom_input import MAX_INFLATED_BYTES, read_dicom
from aidx.inference.errors import PayloadTooLarge


def deflate_bomb(inflated_bytes: int) -> bytes:
    """A Part 10 file whose deflated data set is one Pixel Data element of zeros."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)  # type: ignore[arg-type]
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [squeeze.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, inflated_bytes))]
    zeros = bytes(1 << 20)
    for _ in range(inflated_bytes >> 20):
        body.append(squeeze.compress(zeros))
    body.append(squeeze.flush())
    return head.getvalue() + b"".join(body)


def test_a_deflate_bomb_is_refused_before_it_is_inflated() -> None:
    bomb = deflate_bomb(MAX_INFLATED_BYTES + (8 << 20))
    assert len(bomb) < 1 << 20  # under a megabyte on the wire
    tracemalloc.start()
    with pytest.raises(PayloadTooLarge) as refused:
        read_dicom(bomb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert refused.value.code == "deflated_too_large"
    assert peak < 64 << 20  # nothing like the inflated size was held


def test_a_deflated_file_under_the_bound_still_reads() -> None:
    real = open(get_testdata_file("image_dfl.dcm"), "rb").read()  # noqa: SIM115
    assert read_dicom(real).Modality
    small = deflate_bomb(4 << 20)
    assert len(read_dicom(small).PixelData) == 4 << 20
