"""Observations every imaging pipeline makes the same way for drift monitoring
(aidx.inference.drift): a DICOM header's acquisition attributes, and the model input's
intensity summary."""

from __future__ import annotations

import numpy as np
import pydicom

from aidx.inference.drift import Value

NONE = "(none)"  # a header without the attribute: a category of its own
INPUT_PERCENTILES = (5, 50, 95)


def header_text(ds: pydicom.Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    return value or NONE


def header_number(ds: pydicom.Dataset, *keywords: str) -> float | None:
    """The first of `keywords` present, as a number (its first value if several)."""
    for keyword in keywords:
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        first = value[0] if isinstance(value, pydicom.multival.MultiValue) else value
        try:
            return round(float(first), 4)
        except (TypeError, ValueError):
            return None
    return None


def input_summary(tensor: np.ndarray) -> dict[str, Value]:
    """Mean, standard deviation and percentiles of the model's input tensor (its units)."""
    values = tensor.astype(np.float64, copy=False).ravel()
    summary: dict[str, Value] = {
        "input_mean": round(float(values.mean()), 3),
        "input_std": round(float(values.std()), 3),
    }
    for q, p in zip(INPUT_PERCENTILES, np.percentile(values, INPUT_PERCENTILES), strict=True):
        summary[f"input_p{q:02d}"] = round(float(p), 3)
    return summary
