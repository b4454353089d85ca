"""The radiograph at full resolution for the review workspace's window/level.

The analysis keeps only a display-ready, VOI-windowed copy at overlay size (8 bits);
a radiologist who widens or narrows the window needs the values before the window:
the modality-LUT values (stored values -> Rescale or Modality LUT), linearly
quantised to uint16 over their own range, with the header's default window (else a
robust one over the image) and whether the display inverts (MONOCHROME1). The
workspace reads the raw little-endian uint16 and windows them on a canvas.

Quantising takes passes over every pixel, which the analysis does not need. So for
integer pixels of up to 16 bits (every CR and DX in practice) the analysis saves the
stored values as decoded, with each possible code's modality value (FullSource), and
the viewer's image is made from them when it is first asked for (full_image_file),
by the same arithmetic as before, so its pixels are the same; the source is then
removed. Other pixels (floats, 32 bits) are quantised at once (FullImage), as they
always were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from aidx.inference.errors import NotFound
from aidx.inference.reports import ReportStore
from aidx.pipelines.cxr.content import code_counts

FULL_PIXELS_FILE = "radiograph16.raw"
FULL_META_FILE = "radiograph16.json"
SOURCE_FILE = "radiograph16.source"  # the code table (<f8), then the stored codes (<u1/<u2)
SOURCE_META_FILE = "radiograph16.source.json"
SOURCE_FILES = (SOURCE_FILE, SOURCE_META_FILE)
LEVELS = 65535
ROBUST_WINDOW_PCT = (0.5, 99.5)
Window = tuple[float, float]  # (center, width), modality units


@dataclass(frozen=True)
class FullImage:
    pixels: np.ndarray  # uint16 [rows, columns]: modality values, quantised
    value_min: float  # the modality value of pixel code 0
    value_max: float  # the modality value of pixel code 65535
    window: Window | None  # from the header
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


@dataclass(frozen=True)
class FullSource:
    """What the viewer's FullImage is made from, kept without a pass over the pixels."""

    codes: np.ndarray  # unsigned, 1 or 2 bytes [rows, columns]: the stored values' bits
    table: np.ndarray  # float64 [2**bits of a code]: each code's modality value
    window: Window | None
    invert: bool

    def image(self) -> FullImage:
        """Every code's level from the table (quantised over the codes the image has),
        then one gather over the image."""
        seen = self.table[code_counts(self.codes, self.table.size) > 0]
        lo, span = _range(seen)
        pixels = _to_levels(self.table, lo, span)[self.codes]
        return FullImage(pixels, lo, lo + span, self.window, self.invert)

    def files(self) -> dict[str, bytes]:
        rows, columns = self.codes.shape
        meta = {"rows": rows, "columns": columns, "code_bytes": self.codes.itemsize,
                "window": self.window, "invert": self.invert}  # fmt: skip
        little = self.codes.astype(self.codes.dtype.newbyteorder("<"), copy=False)
        data = b"".join((self.table.astype("<f8", copy=False).tobytes(), little.tobytes()))
        return {SOURCE_FILE: data, SOURCE_META_FILE: json.dumps(meta).encode()}

    @classmethod
    def from_files(cls, data: bytes, meta_json: bytes) -> FullSource:
        meta = json.loads(meta_json)
        entries = 2 ** (8 * int(meta["code_bytes"]))
        table = np.frombuffer(data, dtype="<f8", count=entries)
        codes = np.frombuffer(data, dtype=f"<u{meta['code_bytes']}", offset=table.nbytes)
        window = meta["window"]
        return cls(
            codes=codes.reshape(int(meta["rows"]), int(meta["columns"])),
            table=table,
            window=(float(window[0]), float(window[1])) if window is not None else None,
            invert=bool(meta["invert"]),
        )


def _header_window(ds: pydicom.Dataset) -> Window | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = ds.WindowCenter, ds.WindowWidth
    first = [float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
             for v in (center, width)]  # fmt: skip
    return (first[0], first[1]) if first[1] > 0 else None


def _range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    return lo, hi - lo if hi > lo else 1.0


def _to_levels(values: np.ndarray, lo: float, span: float) -> np.ndarray:
    """Clipped first: a table's codes absent from the image may lie outside the range."""
    return np.rint((np.clip(values, lo, lo + span) - lo) * (LEVELS / span)).astype(np.uint16)


def full_image(ds: pydicom.Dataset, stored: np.ndarray) -> FullSource | FullImage:
    """Integers of up to 16 bits: the codes (a view of `stored`, no copy) and a table
    of every code's modality value. Other pixels: the quantised values at once."""
    window = _header_window(ds)
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    if stored.dtype.kind in "iu" and stored.dtype.itemsize <= 2 and stored.dtype.isnative:
        unsigned = np.dtype(f"u{stored.dtype.itemsize}")
        codes = np.arange(2 ** (8 * stored.dtype.itemsize), dtype=unsigned).view(stored.dtype)
        table = np.asarray(apply_modality_lut(codes, ds), dtype=np.float64)
        return FullSource(stored.view(unsigned), table, window, invert)
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    lo, span = _range(values)
    return FullImage(_to_levels(values, lo, span), lo, lo + span, window, invert)


def save_full_image(store: ReportStore, rid: str, image: FullSource | FullImage) -> None:
    """At analysis: the source of the viewer's image (or the image itself)."""
    files = image.files() if isinstance(image, FullSource) else _image_files(image)
    for name, data in files.items():
        store.put(rid, name, data)


def _image_files(image: FullImage) -> dict[str, bytes]:
    return {
        FULL_PIXELS_FILE: image.pixels.astype("<u2").tobytes(),
        FULL_META_FILE: json.dumps(image.meta()).encode(),
    }


def full_image_file(store: ReportStore, rid: str, name: str) -> Path:
    """Report `rid`'s viewer file `name` (FULL_PIXELS_FILE or FULL_META_FILE), made
    from its source on first use; the source is then removed (the viewer's files hold
    all the workspace reads, and a report should not keep the radiograph twice).
    Concurrent first uses each write the same bytes atomically, so a reader never sees
    half a file, and one that finds the source gone finds the files it was made into.
    A report without either (analysed before the workspace had it) answers NotFound."""
    try:
        return store.file(rid, name)
    except NotFound as missing:
        try:
            data, meta = (store.file(rid, part).read_bytes() for part in SOURCE_FILES)
        except (NotFound, FileNotFoundError):
            try:  # a concurrent first use made the files and removed the source
                return store.file(rid, name)
            except NotFound:
                raise missing from None
    files = _image_files(FullSource.from_files(data, meta).image())
    for written, content in files.items():
        store.put(rid, written, content)
    for part in SOURCE_FILES:
        store.discard(rid, part)
    return store.file(rid, name)
