"""Series assembly on real DICOM: pydicom's CT files and series written with pydicom."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from aidx.inference.dicom_input import read_dicom
from aidx.inference.errors import BadRequest, Unprocessable
from aidx.pipelines.ct import synthetic
from aidx.pipelines.ct.series import assemble, assemble_bytes
from aidx.service.handlers import http_status
from tests.pipelines.ct.conftest import edited


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is missing (pip install pydicom-data)"
    return Path(path)


def refused(blobs: list[bytes], code: str) -> Unprocessable:
    with pytest.raises(Unprocessable) as info:
        assemble_bytes(blobs)
    assert info.value.code == code, info.value.message
    assert http_status(info.value) == 422
    return info.value


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_UNCR.dcm", "693_J2KI.dcm", "693_J2KR.dcm"])
def test_a_single_real_slice_is_too_few(name: str) -> None:
    error = refused([pydicom_file(name).read_bytes()], "too_few_slices")
    assert error.details["slices"] == 1


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_J2KI.dcm"])
def test_real_slice_hounsfield_units(name: str) -> None:
    ds = pydicom.dcmread(pydicom_file(name))
    volume = assemble([ds], min_slices=1)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(volume.hu[0], expected)
    assert volume.shape == (1, ds.Rows, ds.Columns)
    assert volume.spacing_mm[:2] == (float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]))
    np.testing.assert_allclose(
        volume.affine_lps[:3, 3], [float(v) for v in ds.ImagePositionPatient]
    )


def test_enhanced_multiframe_ct() -> None:
    ds = pydicom.dcmread(pydicom_file("eCT_Supplemental.dcm"))
    volume = assemble([ds], min_slices=2)
    assert volume.shape == (2, 512, 512)
    # Orientation [-1,0,0, 0,1,0]: the normal is -z, so frame 2 (z = -149) comes first.
    assert volume.frame_numbers == [2, 1]
    np.testing.assert_allclose(volume.affine_lps[:3, 2], [0, 0, -10.0])
    np.testing.assert_allclose(volume.affine_lps[:3, 3], [99.5, -301.5, -149.0])
    np.testing.assert_allclose(volume.hu[0], ds.pixel_array[1].astype(np.float32) - 1024.0)
    assert volume.spacing_mm == pytest.approx((0.388672, 0.388672, 10.0))
    with pytest.raises(Unprocessable, match="at least"):
        assemble([ds])


def test_shuffled_series_is_sorted_by_position(
    small_blobs: list[bytes], small_phantom: synthetic.Phantom
) -> None:
    shuffled = small_blobs[:]
    random.Random(3).shuffle(shuffled)
    volume = assemble_bytes(shuffled)
    np.testing.assert_allclose(volume.hu, small_phantom.hu, atol=0.51)  # int16 storage
    np.testing.assert_allclose(volume.affine_lps, small_phantom.affine_lps, atol=1e-3)
    order = [pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID for b in small_blobs]
    assert volume.sop_instance_uids == order
    assert volume.source.series_instance_uid is not None
    assert volume.source.modality == "CT"


def test_instance_numbers_are_ignored(small_blobs: list[bytes]) -> None:
    renumbered = [edited(b, InstanceNumber=len(small_blobs) - n) for n, b in enumerate(small_blobs)]
    volume = assemble_bytes(renumbered[::-1])
    assert volume.affine_lps[2, 2] > 0  # still foot to head


def test_first_and_last_slice_may_be_missing(small_blobs: list[bytes]) -> None:
    assert assemble_bytes(small_blobs[1:-1]).shape[0] == len(small_blobs) - 2


def test_a_missing_slice_is_a_gap(small_blobs: list[bytes]) -> None:
    error = refused(small_blobs[:10] + small_blobs[11:], "slice_gap")
    assert "gap" in error.message


def test_a_duplicated_slice(small_blobs: list[bytes]) -> None:
    refused([*small_blobs, small_blobs[5]], "duplicate_slice_position")


def test_uneven_slice_spacing(small_blobs: list[bytes]) -> None:
    ds = pydicom.dcmread(io.BytesIO(small_blobs[5]))
    moved = [float(v) for v in ds.ImagePositionPatient]
    moved[2] += 3.0
    refused([*small_blobs[:5], edited(small_blobs[5], ImagePositionPatient=moved),
             *small_blobs[6:]], "nonuniform_slice_spacing")  # fmt: skip


def test_two_series_mixed(small_blobs: list[bytes]) -> None:
    other = generate_uid()
    refused(small_blobs + [edited(b, SeriesInstanceUID=other) for b in small_blobs[:3]],
            "mixed_series")  # fmt: skip


def test_a_localizer_is_refused(small_blobs: list[bytes]) -> None:
    scout = edited(small_blobs[0], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    refused([scout, *small_blobs[1:]], "localizer")


def test_a_sagittal_series_is_not_axial(small_blobs: list[bytes]) -> None:
    sagittal = [
        edited(
            b,
            ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
            ImagePositionPatient=[float(n) * 10, 0, 0],
        )  # fmt: skip
        for n, b in enumerate(small_blobs)
    ]
    refused(sagittal, "not_axial")


def test_mixed_orientation_size_and_spacing(small_blobs: list[bytes]) -> None:
    tilted = edited(small_blobs[3], ImageOrientationPatient=[1, 0, 0, 0, 0.995, 0.0998])
    refused([*small_blobs[:3], tilted, *small_blobs[4:]], "inconsistent_orientation")
    wider = edited(small_blobs[3], PixelSpacing=[5.0, 5.5])
    refused([*small_blobs[:3], wider, *small_blobs[4:]], "inconsistent_pixel_spacing")


def test_gantry_tilt_is_refused(small_blobs: list[bytes]) -> None:
    sheared = []
    for n, blob in enumerate(small_blobs):
        ds = pydicom.dcmread(io.BytesIO(blob))
        pos = [float(v) for v in ds.ImagePositionPatient]
        sheared.append(edited(blob, ImagePositionPatient=[pos[0], pos[1] + 2.0 * n, pos[2]]))
    refused(sheared, "gantry_tilt")


def test_not_ct_and_not_dicom(small_blobs: list[bytes]) -> None:
    refused([edited(b, Modality="MR") for b in small_blobs], "unsupported_modality")
    with pytest.raises(BadRequest) as info:
        read_dicom(b"this is not DICOM at all" * 10)
    assert info.value.code == "not_dicom"


def test_a_damaged_instance_in_a_ct_series_is_named(small_blobs: list[bytes]) -> None:
    damaged = [*small_blobs[:3], small_blobs[3][: len(small_blobs[3]) // 2], *small_blobs[4:]]
    with pytest.raises(BadRequest) as caught:
        assemble_bytes(damaged)
    assert caught.value.code == "truncated_dicom"
    assert caught.value.details["instance"] == 4 and "instance 4" in caught.value.message
    with pytest.raises(BadRequest) as garbage:
        assemble_bytes([*small_blobs[:5], b"not DICOM" * 50, *small_blobs[5:]])
    assert garbage.value.code == "not_dicom" and garbage.value.details["instance"] == 6


def test_missing_geometry(small_blobs: list[bytes]) -> None:
    ds = pydicom.dcmread(io.BytesIO(small_blobs[0]))
    del ds.ImagePositionPatient
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    refused([out.getvalue(), *small_blobs[1:]], "missing_geometry")


def enhanced_ct(phantom: synthetic.Phantom, order: list[int]) -> bytes:
    """The phantom as one enhanced (multi-frame) CT instance, frames in `order`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian

    def item(**attrs: object) -> Dataset:
        ds = Dataset()
        for name, value in attrs.items():
            setattr(ds, name, value)
        return ds

    col_mm, row_mm, _ = phantom.spacing_mm
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.Rows, ds.Columns = phantom.hu.shape[1:]
    ds.NumberOfFrames = len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[row_mm, col_mm])]),
        PixelValueTransformationSequence=Sequence(
            [item(RescaleSlope=1, RescaleIntercept=-1024, RescaleType="HU")]
        ),
    )])  # fmt: skip
    per_frame = []
    for k in order:
        position = phantom.affine_lps[:3, 3] + phantom.affine_lps[:3, 2] * k
        per_frame.append(item(PlanePositionSequence=Sequence(
            [item(ImagePositionPatient=[float(v) for v in position])])))  # fmt: skip
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    stored = np.rint(phantom.hu[order] + 1024).astype("<i2")
    ds.PixelData = stored.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_synthetic_enhanced_ct_in_any_frame_order(small_phantom: synthetic.Phantom) -> None:
    n = small_phantom.hu.shape[0]
    order = list(range(n))
    random.Random(5).shuffle(order)
    volume = assemble_bytes([enhanced_ct(small_phantom, order)])
    np.testing.assert_allclose(volume.hu, small_phantom.hu, atol=0.51)
    np.testing.assert_allclose(volume.affine_lps, small_phantom.affine_lps, atol=1e-3)
    # Slice k came from frame number (position of k in `order`) + 1.
    assert volume.frame_numbers == [order.index(k) + 1 for k in range(n)]
    gap = [k for k in order if k != 7]
    refused([enhanced_ct(small_phantom, gap)], "slice_gap")
