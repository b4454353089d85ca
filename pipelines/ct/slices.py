"""The series, slice by slice, for the review workspace's CT view: an axial slice in a
named window with every lesion of the label map outlined.

The analysis saves the HU voxels (int16) and the label map (uint8) as plain .npy
files (uncompressed: a fraction of the analysis's time, and one slice is then read
through a memory map without loading the series). A slice's PNG is rendered on its
first request and kept beside the report: a report is immutable, so are its slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    """np.save of clip(rint(hu), HU_RANGE) as int16, written slice by slice straight
    into the file's one buffer (a whole-volume rint, clip and cast took three passes
    over 300 MB, and np.save into a BytesIO two more copies). Whole-number int16 HU
    (the usual series) are only clipped."""
    header = _npy_header(hu.shape, "<i2")
    stream = io.BytesIO()
    stream.seek(len(header) + 2 * hu.size - 1)
    stream.write(b"\0")  # sizes the buffer once
    stream.seek(0)
    stream.write(header)
    with stream.getbuffer() as view:
        out = np.frombuffer(view, dtype="<i2", offset=len(header)).reshape(hu.shape)
        if hu.dtype == np.int16:
            np.clip(hu, *HU_RANGE, out=out)
        else:
            scratch = np.empty(hu.shape[1:], dtype=np.result_type(hu.dtype, np.float32))
            for k in range(hu.shape[0]):  # clip then round: the same (integer bounds)
                np.clip(hu[k], *HU_RANGE, out=scratch)
                np.rint(scratch, out=out[k], casting="unsafe")
        del out  # the view's export ends here
    return stream.getvalue()  # the buffer itself, not a copy


def labels_npy(labels_kji: np.ndarray) -> bytes:
    return _npy(labels_kji.astype(np.uint8, copy=False))


def save_hu(store: ReportStore, rid: str, volume: CtVolume) -> str:
    """Write report `rid`'s HU file under a name of this analysis' own (the file
    depends on the series alone, so it is written while the model runs); its name.
    Blocking."""
    partial = f"{HU_FILE}.{uuid.uuid4().hex}.partial"
    store.put(rid, partial, hu_npy(volume.hu))
    return partial


@asynccontextmanager
async def hu_written(store: ReportStore, rid: str, volume: CtVolume) -> AsyncIterator[None]:
    """Report `rid`'s HU file written in a worker thread while the block runs, and put
    in place when the block ends well; a block that fails removes only its own copy
    (the same series analysed at once by another request, or before, keeps its file)."""
    saving = asyncio.ensure_future(asyncio.to_thread(save_hu, store, rid, volume))
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # its own failure: nothing to remove
            await asyncio.to_thread(store.discard, rid, await saving)
        raise
    await asyncio.to_thread(store.rename, rid, await saving, HU_FILE)


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
