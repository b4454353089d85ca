"""Small synthetic chest-CT series written as real DICOM files with pydicom."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from aidx.pipelines.ct import synthetic

SMALL_SHAPE = (24, 64, 80)  # slices, rows, columns
SMALL_SPACING = (5.0, 5.0, 10.0)  # column, row, slice step (mm)


@pytest.fixture(scope="session")
def small_phantom() -> synthetic.Phantom:
    return synthetic.generate(
        np.random.default_rng(7), shape_kji=SMALL_SHAPE, spacing_mm=SMALL_SPACING, n_lesions=1
    )


@pytest.fixture(scope="session")
def small_series(
    small_phantom: synthetic.Phantom, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    return synthetic.write_series(small_phantom, tmp_path_factory.mktemp("small_series"))


@pytest.fixture()
def small_blobs(small_series: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in small_series]


def replicated_series(name: str, n_slices: int = 12, **attrs: object) -> list[bytes]:
    """A series of `n_slices` copies of one real pydicom-data slice, stepped by its
    SliceThickness along its own slice normal, with fresh UIDs. BodyPartExamined is
    removed unless `attrs` sets it (pydicom-data holds single slices, not series)."""
    path = get_testdata_file(name)
    assert path is not None, f"{name} is missing (pip install pydicom-data)"
    first = pydicom.dcmread(path)
    cosines = np.array([float(v) for v in first.ImageOrientationPatient])
    normal = np.cross(cosines[:3], cosines[3:])
    step = float(first.SliceThickness) * normal / np.linalg.norm(normal)
    origin = np.array([float(v) for v in first.ImagePositionPatient])
    series_uid = generate_uid()
    out = []
    for k in range(n_slices):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [round(float(v), 4) for v in origin + k * step]
        if "BodyPartExamined" in ds:
            del ds.BodyPartExamined
        for attr, value in attrs.items():
            setattr(ds, attr, value)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


@pytest.fixture(scope="session")
def head_series() -> list[bytes]:
    """A real non-contrast head CT slice (pydicom-data 693_UNCR.dcm: brain in a head
    holder, frontal sinus air) as a 12-slice series without BodyPartExamined."""
    return replicated_series("693_UNCR.dcm")


def edited(blob: bytes, **attrs: object) -> bytes:
    """A copy of a DICOM file with some attributes changed."""
    ds = pydicom.dcmread(io.BytesIO(blob))
    for name, value in attrs.items():
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
