"""What a radiologist and the PACS writer get besides the numbers: the lesion label
map on the original series' voxel grid (for DICOM SEG) and key-slice overlays."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image
from scipy import ndimage

from aidx.pipelines.ct.preprocess import LPS_TO_RAS, ModelGrid
from aidx.pipelines.ct.series import CtVolume

MAX_LABELS = 255  # the label map is uint8
OVERLAY_WINDOW_HU = (-1350.0, 150.0)


def original_to_model(volume: CtVolume, grid: ModelGrid) -> np.ndarray:
    """4x4 matrix from original indices (k, j, i, 1) to model-grid indices (x, y, z, 1)."""
    kji_to_ijk = np.eye(4)[[2, 1, 0, 3]]
    return np.linalg.inv(grid.affine_ras) @ LPS_TO_RAS @ volume.affine_lps @ kji_to_ijk


def label_map_on_series(labels_xyz: np.ndarray, volume: CtVolume, grid: ModelGrid) -> np.ndarray:
    """Nearest-neighbour resampling of the model-grid label map onto the series:
    uint8 [k, j, i], slice k in `volume.sop_instance_uids` order."""
    m = original_to_model(volume, grid)
    out = np.zeros(volume.shape, dtype=np.uint8)
    ndimage.affine_transform(
        np.minimum(labels_xyz, MAX_LABELS).astype(np.uint8),
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=volume.shape,
        output=out,
        order=0,
        mode="constant",
        cval=0,
    )
    return out


def label_map_npz(labels_kji: np.ndarray, volume: CtVolume, segments: list[dict]) -> bytes:  # type: ignore[type-arg]
    """The label map with what a SEG writer needs to reference the source frames."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        labels=labels_kji,
        affine_lps=volume.affine_lps,
        sop_instance_uids=np.array(volume.sop_instance_uids),
        frame_numbers=np.array([0 if f is None else f for f in volume.frame_numbers]),
        segments=np.array(json.dumps(segments)),
    )
    return buffer.getvalue()


def key_slice_png(volume: CtVolume, labels_kji: np.ndarray, k: int, label: int) -> bytes:
    """Axial slice k in the lung window; all lesions tinted red, `label` outlined yellow."""
    lo, hi = OVERLAY_WINDOW_HU
    gray = np.clip((volume.hu[k] - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2).astype(np.float32)
    lesion = labels_kji[k] > 0
    rgb[lesion] = 0.55 * rgb[lesion] + 0.45 * np.array([255.0, 0.0, 0.0])
    this = labels_kji[k] == label
    edge = this & ~ndimage.binary_erosion(this, iterations=1)
    edge = ndimage.binary_dilation(edge, iterations=max(1, volume.shape[1] // 256))
    rgb[edge] = (255.0, 220.0, 0.0)
    buffer = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()
