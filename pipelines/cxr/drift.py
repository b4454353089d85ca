"""What the CXR pipeline observes of each radiograph for drift monitoring
(aidx.inference.drift): the acquisition as the header states it, and the model
input's intensity summary. Values the pipeline already holds: no extra pass."""

from __future__ import annotations

import numpy as np
import pydicom

from aidx.inference.drift import Value

NONE = "(none)"  # a header without the attribute: a category of its own
INPUT_PERCENTILES = (5, 50, 95)


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    return value or NONE


def _number(ds: pydicom.Dataset, *keywords: str) -> float | None:
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


def acquisition(ds: pydicom.Dataset) -> dict[str, Value]:
    """Manufacturer, station name, kVp and pixel spacing (mm, the row spacing)."""
    return {
        "manufacturer": _text(ds, "Manufacturer"),
        "station_name": _text(ds, "StationName"),
        "kvp": _number(ds, "KVP"),
        "pixel_spacing_mm": _number(ds, "PixelSpacing", "ImagerPixelSpacing"),
    }


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
