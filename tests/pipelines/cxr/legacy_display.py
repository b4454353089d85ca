"""The radiograph display chain as it was before issue 16 (float64 passes over the
whole image), kept as the oracle the lookup-table version must match pixel for pixel."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut


def _voi_range(ds: pydicom.Dataset) -> tuple[float, float]:
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
        lo, hi = _voi_range(ds)
    else:
        lo, hi = (float(v) for v in np.percentile(values, (0.5, 99.5)))
    span = hi - lo if hi > lo else 1.0
    image01 = np.clip((values - lo) / span, 0.0, 1.0)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        image01 = 1.0 - image01
    return image01.astype(np.float32)
