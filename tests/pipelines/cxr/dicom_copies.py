"""Copies of pydicom-data's real files with edited headers, and drawn images written
as CR files, for the content checks and the out-of-distribution gate."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom

from aidx.pipelines.cxr import synthetic, synthetic_dicom
from tests.conftest import dicom_bytes


def edited(name: str, **changes: object) -> bytes:
    """pydicom-data's `name` with header attributes set (None: removed)."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(name)))
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def drawn_cr(image01: np.ndarray, folder: Path, name: str, **changes: object) -> bytes:
    """A drawn image (e.g. flat grey, noise) as a CR chest file, headers edited."""
    sample = synthetic.SyntheticCxr(
        image01=image01.astype(np.float32),
        pneumonia_mask=np.zeros(image01.shape, bool),
        lung_mask=np.zeros(image01.shape, bool),
        pneumonia=False,
        cardiomegaly=False,
        cardiothoracic_ratio=0.0,
        pixel_spacing_mm=(0.3, 0.3),
    )
    path = folder / f"{name}.dcm"
    ds = synthetic_dicom.write_dicom(sample, path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def phantom_cr(seed: int, folder: Path, **write: object) -> bytes:
    """An in-distribution test phantom (a fresh seed) as the service receives it."""
    rng = np.random.default_rng([seed, 7])
    sample = synthetic.generate(
        rng,
        size_px=synthetic.sample_size_px(rng),
        pneumonia=bool(rng.random() < 0.5),
        cardiomegaly=bool(rng.random() < 0.4),
    )
    path = folder / f"phantom-{seed}.dcm"
    synthetic_dicom.write_dicom(sample, path, **write)  # type: ignore[arg-type]
    return path.read_bytes()
