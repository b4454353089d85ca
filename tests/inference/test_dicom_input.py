"""One vocabulary for damaged DICOM: the engine's reader on real files cut and edited
with pydicom, and the same damaged file sent to POST /v1/cxr and POST /v1/ct (as a
one-instance series) answering the same code and status."""

from __future__ import annotations

import io
from collections.abc import Callable

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import BasicTextSRStorage

from aidx.inference.dicom_input import read_dicom, read_image
from aidx.inference.errors import BadRequest, Unprocessable
from aidx.inference.settings import Role
from tests.conftest import auth, dicom_bytes


def saved(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def edited(name: str, edit: Callable[[pydicom.Dataset], None]) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(name)))
    edit(ds)
    return saved(ds)


def a_text_report(ds: pydicom.Dataset) -> None:
    """An object without pixels that is not an image (a text SR)."""
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    ds.Modality = "SR"


def lose_pixels(ds: pydicom.Dataset) -> None:
    del ds.PixelData


def cut(name: str, keep: float) -> bytes:
    data = dicom_bytes(name)
    return data[: int(len(data) * keep)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"hello, not a DICOM file" * 10, "not_dicom"),
        (dicom_bytes("CT_small.dcm")[:132], "truncated_dicom"),  # the preamble only
        (dicom_bytes("CT_small.dcm")[:200], "truncated_dicom"),  # inside the file meta
        (dicom_bytes("RG1_J2KR.dcm")[:1000], "truncated_dicom"),  # inside a tag
        (cut("CT_small.dcm", 0.5), "truncated_dicom"),  # inside native pixel data
        (cut("RG1_J2KR.dcm", 0.5), "truncated_dicom"),  # inside encapsulated pixel data
        (dicom_bytes("RG1_UNCR.dcm")[:-10], "truncated_dicom"),  # the trailing padding
    ],
)
def test_the_reader_names_the_damage(data: bytes, code: str) -> None:
    with pytest.raises(BadRequest) as caught:
        read_dicom(data)
    assert caught.value.code == code, caught.value.message


def test_objects_without_pixels() -> None:
    with pytest.raises(BadRequest) as truncated:  # an image object: it lost its pixels
        read_image(edited("CT_small.dcm", lose_pixels))
    assert truncated.value.code == "truncated_dicom"
    with pytest.raises(Unprocessable) as no_image:  # not an image at all
        read_image(edited("CT_small.dcm", a_text_report))
    assert no_image.value.code == "no_pixel_data"
    assert read_dicom(dicom_bytes("CT_small.dcm")).Modality == "CT"  # whole files pass


DAMAGED = {
    "not DICOM at all": (lambda: b"hello, not a DICOM file" * 10, 400, "not_dicom"),
    "a CT cut short": (lambda: cut("CT_small.dcm", 0.5), 400, "truncated_dicom"),
    "a radiograph cut short": (lambda: cut("RG1_J2KR.dcm", 0.05), 400, "truncated_dicom"),
    "an image without its pixels": (
        lambda: edited("CT_small.dcm", lose_pixels), 400, "truncated_dicom"),
    "no pixel data": (lambda: edited("CT_small.dcm", a_text_report), 422, "no_pixel_data"),
    "wrong modality": (lambda: dicom_bytes("MR_small.dcm"), 422, "unsupported_modality"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGED))
def test_the_same_damage_gets_the_same_code_on_every_route(client: TestClient, case: str) -> None:
    make, status, code = DAMAGED[case]
    data = make()
    headers = auth(Role.radiologist)
    dicom = {**headers, "Content-Type": "application/dicom"}
    cxr = client.post("/v1/cxr", content=data, headers=dicom)
    one_instance = [("files", ("1.dcm", data, "application/dicom"))]
    ct = client.post("/v1/ct", files=one_instance, headers=headers)
    for answer in (cxr, ct):
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert ct.json()["message"].startswith("instance 1: ")  # which file of the series
