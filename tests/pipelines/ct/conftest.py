"""Small synthetic chest-CT series written as real DICOM files with pydicom."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest

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


def edited(blob: bytes, **attrs: object) -> bytes:
    """A copy of a DICOM file with some attributes changed."""
    ds = pydicom.dcmread(io.BytesIO(blob))
    for name, value in attrs.items():
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
