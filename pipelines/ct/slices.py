"""The series, slice by slice, for the review workspace's CT view: an axial slice in a
named window with every lesion of the label map outlined.

The analysis saves the HU voxels (int16) and the label map (uint8) as plain .npy
files (uncompressed: a fraction of the analysis's time, and one slice is then read
through a memory map without loading the series). A slice's PNG is rendered on its
first request and kept beside the report: a report is immutable, so are its slices.
"""

from __future__ import annotations

import io
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from aidx.inference.errors import NotFound
from aidx.inference.reports import ReportStore
from aidx.pipelines.ct.series import CtVolume

HU_FILE = "series_hu.npy"
LABELS_FILE = "series_labels.npy"
HU_RANGE = (-1024, 3071)  # the 12-bit CT range: int16 holds it exactly
PNG_LEVEL = 1
# Distinct, colour-blind-safe outline colours (Okabe-Ito), lesion n takes n mod 6.
OUTLINE_RGB = np.array(
    [[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178], [204, 121, 167]],
    dtype=np.uint8,
)


class Window(StrEnum):
    """Display windows (centre, width in HU) a chest CT is read in."""

    lung = "lung"
    mediastinum = "mediastinum"
    bone = "bone"

    @property
    def range_hu(self) -> tuple[float, float]:
        center, width = {"lung": (-600, 1500), "mediastinum": (40, 400), "bone": (400, 1800)}[
            self.value
        ]
        return center - width / 2, center + width / 2


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    """The bytes np.save writes for a C-ordered array, built with one copy."""
    array = np.ascontiguousarray(array)
    return _npy_header(array.shape, array.dtype.str) + array.data


def hu_npy(hu: np.ndarray) -> bytes:
    """np.save of clip(rint(hu), HU_RANGE) as int16. Whole-number int16 HU (the usual
    series) are written as they are when they lie in the range (one copy), else
    clipped; float HU are converted slice by slice straight into the file's buffer (a
    whole-volume rint, clip and cast took three passes over 300 MB)."""
    if hu.dtype == np.int16:
        low, high = HU_RANGE
        inside = hu.size == 0 or (int(hu.min()) >= low and int(hu.max()) <= high)
        return _npy(hu.astype("<i2", copy=False) if inside else np.clip(hu, low, high))
    header = _npy_header(hu.shape, "<i2")
    buffer = bytearray(len(header) + 2 * hu.size)
    buffer[: len(header)] = header
    out = np.frombuffer(buffer, dtype="<i2", offset=len(header)).reshape(hu.shape)
    scratch = np.empty(hu.shape[1:], dtype=np.result_type(hu.dtype, np.float32))
    for k in range(hu.shape[0]):  # clip then round: the same, the bounds being integers
        np.clip(hu[k], *HU_RANGE, out=scratch)
        np.rint(scratch, out=out[k], casting="unsafe")
    return bytes(buffer)


def series_files(volume: CtVolume, labels_kji: np.ndarray) -> dict[str, bytes]:
    """The voxels and the label map as the CT view reads them, by file name."""
    labels = labels_kji.astype(np.uint8, copy=False)
    return {HU_FILE: hu_npy(volume.hu), LABELS_FILE: _npy(labels)}


def slice_file_name(k: int, window: Window) -> str:
    return f"slice_{window.value}_{k:04d}.png"


def slice_count(store: ReportStore, rid: str) -> int:
    """The number of slices of report `rid`'s saved series (404 when it has none)."""
    hu = np.load(store.file(rid, HU_FILE), mmap_mode="r", allow_pickle=False)
    return int(hu.shape[0])


def outlines(labels: np.ndarray) -> np.ndarray:
    """Each lesion's border pixels (its label), 0 elsewhere."""
    inner = ndimage.grey_erosion(labels, size=(3, 3))
    return np.where((labels > 0) & (inner != labels), labels, 0).astype(np.uint8)


def render_slice(hu_slice: np.ndarray, labels_slice: np.ndarray, window: Window) -> bytes:
    lo, hi = window.range_hu
    grey = np.clip((hu_slice.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
    rgb = np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)
    border = outlines(labels_slice)
    drawn = border > 0
    rgb[drawn] = OUTLINE_RGB[(border[drawn].astype(np.intp) - 1) % len(OUTLINE_RGB)]
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def slice_png(store: ReportStore, rid: str, k: int, window: Window) -> Path:
    """Slice `k` of report `rid` in `window`, outlined; rendered once, then kept.
    404 slice_not_found past the series. Blocking: run it off the event loop."""
    name = slice_file_name(k, window)
    try:
        return store.file(rid, name)
    except NotFound:
        pass
    hu = np.load(store.file(rid, HU_FILE), mmap_mode="r", allow_pickle=False)
    if not 0 <= k < hu.shape[0]:
        raise NotFound(
            f"slice {k} is outside the series (0..{hu.shape[0] - 1})",
            code="slice_not_found", slices=int(hu.shape[0]),
        )  # fmt: skip
    labels = np.load(store.file(rid, LABELS_FILE), mmap_mode="r", allow_pickle=False)
    store.put(rid, name, render_slice(np.asarray(hu[k]), np.asarray(labels[k]), window))
    return store.file(rid, name)
