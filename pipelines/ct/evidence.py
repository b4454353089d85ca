"""What a radiologist and the PACS writer get besides the numbers: the lesion label
map on the original series' voxel grid (for DICOM SEG) and key-slice overlays."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from PIL import Image
from scipy import ndimage

from aidx.pipelines.ct.preprocess import LPS_TO_RAS, ModelGrid
from aidx.pipelines.ct.series import CtVolume

MAX_LABELS = 255  # the label map is uint8
OVERLAY_WINDOW_HU = (-1350.0, 150.0)
NPZ_LEVEL = 1  # deflate levels: speed over size (same arrays, same pixels)
PNG_LEVEL = 1


def original_to_model(volume: CtVolume, grid: ModelGrid) -> np.ndarray:
    """4x4 matrix from original indices (k, j, i, 1) to model-grid indices (x, y, z, 1)."""
    kji_to_ijk = np.eye(4)[[2, 1, 0, 3]]
    return np.linalg.inv(grid.affine_ras) @ LPS_TO_RAS @ volume.affine_lps @ kji_to_ijk


def label_map_on_series(labels_xyz: np.ndarray, volume: CtVolume, grid: ModelGrid) -> np.ndarray:
    """Nearest-neighbour resampling of the model-grid label map onto the series:
    uint8 [k, j, i], slice k in `volume.sop_instance_uids` order.

    The model grid is axis-aligned with the series (preprocess), so each series axis
    reads one model axis: the voxels of ndimage.affine_transform(order=0,
    mode="constant"), i.e. model index floor(c + 0.5) where 0 <= c <= n - 1, else 0,
    but only over the series voxels that fall on the lesions' bounding box."""
    m = original_to_model(volume, grid)
    labels = np.minimum(labels_xyz, MAX_LABELS).astype(np.uint8)
    out = np.zeros(volume.shape, dtype=np.uint8)
    found = ndimage.find_objects((labels > 0).astype(np.uint8))
    if not found or found[0] is None:
        return out
    box = found[0]
    model_axes, picks, targets = [], [], []
    for series_axis, n in enumerate(volume.shape):
        model_axis = int(np.argmax(np.abs(m[:3, series_axis])))
        c = m[model_axis, series_axis] * np.arange(n) + m[model_axis, 3]
        index = np.floor(c + 0.5).astype(np.intp)
        lo, hi = box[model_axis].start, box[model_axis].stop
        hit = (c >= 0) & (c <= labels.shape[model_axis] - 1) & (index >= lo) & (index < hi)
        model_axes.append(model_axis)
        targets.append(np.flatnonzero(hit))
        picks.append(index[hit])
    if all(t.size for t in targets):  # each a run of consecutive series indices
        picked = labels.transpose(model_axes)
        for axis, pick in enumerate(picks):  # one gather per axis: no 3-D fancy index
            picked = picked.take(pick, axis=axis)
        out[tuple(slice(t[0], t[-1] + 1) for t in targets)] = picked
    return out


def label_map_npz(labels_kji: np.ndarray, volume: CtVolume, segments: list[dict]) -> bytes:  # type: ignore[type-arg]
    """The label map with what a SEG writer needs to reference the source frames: an
    .npz as np.savez_compressed writes it, at the fastest deflate level (the label
    map is mostly zeros: level 6 took twice as long for no need)."""
    arrays = {
        "labels": labels_kji,
        "affine_lps": volume.affine_lps,
        "sop_instance_uids": np.array(volume.sop_instance_uids),
        "frame_numbers": np.array([0 if f is None else f for f in volume.frame_numbers]),
        "segments": np.array(json.dumps(segments)),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=NPZ_LEVEL) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def key_slice_png(volume: CtVolume, labels_kji: np.ndarray, k: int, label: int) -> bytes:
    """Axial slice k in the lung window; all lesions tinted red, `label` outlined yellow."""
    lo, hi = OVERLAY_WINDOW_HU
    hu = volume.hu[k].astype(np.float32, copy=False)  # float32 arithmetic, whatever its dtype
    gray = np.clip((hu - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2).astype(np.float32)
    lesion = labels_kji[k] > 0
    rgb[lesion] = 0.55 * rgb[lesion] + 0.45 * np.array([255.0, 0.0, 0.0])
    this = labels_kji[k] == label
    edge = this & ~ndimage.binary_erosion(this, iterations=1)
    edge = ndimage.binary_dilation(edge, iterations=max(1, volume.shape[1] // 256))
    rgb[edge] = (255.0, 220.0, 0.0)
    buffer = io.BytesIO()
    image = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    image.save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()
