"""What the CXR pipeline observes of each radiograph for drift monitoring
(aidx.inference.drift): the acquisition as the header states it, and the model
input's intensity summary (aidx.inference.drift_inputs). Values the pipeline already
holds: no extra pass."""

from __future__ import annotations

import pydicom

from aidx.inference.drift import Value
from aidx.inference.drift_inputs import NONE, header_number, header_text, input_summary

__all__ = ["NONE", "acquisition", "input_summary"]


def acquisition(ds: pydicom.Dataset) -> dict[str, Value]:
    """Manufacturer, station name, kVp and pixel spacing (mm, the row spacing)."""
    return {
        "manufacturer": header_text(ds, "Manufacturer"),
        "station_name": header_text(ds, "StationName"),
        "kvp": header_number(ds, "KVP"),
        "pixel_spacing_mm": header_number(ds, "PixelSpacing", "ImagerPixelSpacing"),
    }
