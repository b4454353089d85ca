"""The radiograph at full resolution for the review workspace's window/level.

The analysis keeps only a display-ready, VOI-windowed copy at overlay size (8 bits);
a radiologist who widens or narrows the window needs the values before the window.
So the decode also keeps the modality-LUT values (stored values -> Rescale or
Modality LUT), linearly quantised to uint16 over their own range, with the header's
default window (else a robust one over the image) and whether the display inverts
(MONOCHROME1). The analysis saves them uncompressed (a few ms); the workspace reads
the raw little-endian uint16 and windows them on a canvas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from aidx.inference.reports import ReportStore

FULL_PIXELS_FILE = "radiograph16.raw"
FULL_META_FILE = "radiograph16.json"
LEVELS = 65535
ROBUST_WINDOW_PCT = (0.5, 99.5)


@dataclass(frozen=True)
class FullImage:
    pixels: np.ndarray  # uint16 [rows, columns]: modality values, quantised
    value_min: float  # the modality value of pixel code 0
    value_max: float  # the modality value of pixel code 65535
    window: tuple[float, float] | None  # (center, width) from the header, modality units
    invert: bool  # MONOCHROME1: bright = low values

    def meta(self) -> dict[str, object]:
        rows, columns = self.pixels.shape
        center, width = self.window or self._robust_window()
        return {
            "rows": int(rows), "columns": int(columns), "value_min": self.value_min,
            "value_max": self.value_max, "window_center": center, "window_width": width,
            "window_from_header": self.window is not None, "invert": self.invert,
        }  # fmt: skip

    def _robust_window(self) -> tuple[float, float]:
        """The 0.5-99.5 % window of the decode's default display, from a histogram."""
        counts = np.cumsum(np.bincount(self.pixels.ravel(), minlength=LEVELS + 1))
        lo, hi = (int(np.searchsorted(counts, counts[-1] * q / 100)) for q in ROBUST_WINDOW_PCT)
        step = (self.value_max - self.value_min) / LEVELS
        low, high = self.value_min + lo * step, self.value_min + max(hi, lo + 1) * step
        return (low + high) / 2, high - low


def _header_window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = ds.WindowCenter, ds.WindowWidth
    first = [float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
             for v in (center, width)]  # fmt: skip
    return (first[0], first[1]) if first[1] > 0 else None


def _quantised(ds: pydicom.Dataset, stored: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored -> modality values -> uint16 over their own range: (pixels, lo, span).
    Integers of up to 16 bits go through a table of every code, quantised once, and
    one gather over the image (no float64 copy of it), with identical values."""
    if stored.dtype.kind in "iu" and stored.dtype.itemsize <= 2 and stored.dtype.isnative:
        unsigned = np.dtype(f"u{stored.dtype.itemsize}")
        codes = np.arange(2 ** (8 * stored.dtype.itemsize), dtype=unsigned).view(stored.dtype)
        table = np.asarray(apply_modality_lut(codes, ds), dtype=np.float64)
        keys = stored.view(unsigned)
        seen = table[np.bincount(keys.ravel(), minlength=codes.size) > 0]
        lo, span = _range(seen)
        return _to_levels(table, lo, span)[keys], lo, span
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    lo, span = _range(values)
    return _to_levels(values, lo, span), lo, span


def _range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    return lo, hi - lo if hi > lo else 1.0


def _to_levels(values: np.ndarray, lo: float, span: float) -> np.ndarray:
    """Clipped first: a table's codes absent from the image may lie outside the range."""
    return np.rint((np.clip(values, lo, lo + span) - lo) * (LEVELS / span)).astype(np.uint16)


def full_image(ds: pydicom.Dataset, stored: np.ndarray) -> FullImage:
    pixels, lo, span = _quantised(ds, stored)
    return FullImage(
        pixels=pixels,
        value_min=lo,
        value_max=lo + span,
        window=_header_window(ds),
        invert=str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1",
    )


def save_full_image(store: ReportStore, rid: str, image: FullImage) -> None:
    store.put(rid, FULL_PIXELS_FILE, image.pixels.astype("<u2").tobytes())
    store.put(rid, FULL_META_FILE, json.dumps(image.meta()).encode())
