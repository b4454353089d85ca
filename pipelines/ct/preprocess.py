"""The one preprocessing function used by training and serving: orientation to RAS,
resampling to the model's spacing on the body's bounding box, lung windowing.

A volume comes in as the series reader gives it (HU [k, j, i] + LPS affine) and
goes out channel-first in MONAI's convention: [1, X, Y, Z] with X towards the
patient's right, Y anterior, Z head, and an affine from those voxels to RAS mm.
The model grid is MONAI's (Orientation to RAS, then Spacing), computed lazily from
the header alone; only its part around the body (tissue above BODY_MIN_HU, with a
margin of outside air) is resampled, once, with anti-aliasing where the series is
finer than the model (resample.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, Spacing

from aidx.pipelines.ct import resample

LUNG_WINDOW_HU = (-1350.0, 150.0)  # level -600, width 1500
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
BODY_MIN_HU = -500.0  # above: tissue (lung is below, but the body encloses it)
BODY_STRIDE = 2  # series voxels between samples when looking for the body
BODY_MARGIN_VOXELS = 2  # model voxels of air kept around the body


@dataclass(frozen=True)
class ModelGrid:
    """The volume on the model's grid."""

    image: np.ndarray  # float32 [1, X, Y, Z], lung window scaled to 0..1
    hu: np.ndarray  # float32 [X, Y, Z], HU (for lesion mean HU and the lung mask)
    affine_ras: np.ndarray  # (x, y, z, 1) voxel -> RAS mm
    label: np.ndarray | None  # uint8 [X, Y, Z] when a label map was given (training)

    @property
    def spacing_mm(self) -> float:
        return float(np.linalg.norm(self.affine_ras[:3, 0]))

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine_ras[:3, :3]))) / 1000.0

    def to_lps(self, xyz: np.ndarray) -> np.ndarray:
        xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
        ras = xyz @ self.affine_ras[:3, :3].T + self.affine_ras[:3, 3]
        return ras * np.array([-1.0, -1.0, 1.0])


def model_geometry(
    shape_kji: tuple[int, ...], affine_lps: np.ndarray, spacing_mm: float
) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """MONAI's model grid for a series (Orientation to RAS, Spacing), from its header
    alone (lazy transforms: no voxel is touched): (affine_ras, shape, model -> (i, j, k))."""
    affine_ras = LPS_TO_RAS @ affine_lps
    header = MetaTensor(
        torch.zeros(1, 1, 1, 1).expand(1, *shape_kji[::-1]), affine=torch.as_tensor(affine_ras)
    )
    oriented = Orientation(axcodes="RAS", labels=RAS_LABELS, lazy=True)(header)
    spaced = Spacing(pixdim=(spacing_mm,) * 3, padding_mode="border", lazy=True)(oriented)
    assert isinstance(spaced, MetaTensor)  # a MetaTensor in, a MetaTensor out
    model_affine = spaced.peek_pending_affine().numpy().astype(np.float64)
    shape = tuple(int(n) for n in spaced.peek_pending_shape())
    return model_affine, shape, np.linalg.solve(affine_ras, model_affine)  # type: ignore[return-value]


def body_box(
    hu_kji: np.ndarray, model_to_ijk: np.ndarray, shape: tuple[int, int, int]
) -> tuple[slice, slice, slice]:
    """The model voxels (x, y, z slices) around the body: tissue above BODY_MIN_HU,
    found on every BODY_STRIDE-th series voxel, plus BODY_MARGIN_VOXELS of air so
    that outside air still touches the grid's edges (postprocess.lung_mask)."""
    coarse = hu_kji[::BODY_STRIDE, ::BODY_STRIDE, ::BODY_STRIDE] > BODY_MIN_HU
    extents = []
    for axis in range(3):
        found = np.flatnonzero(coarse.any(axis=tuple(a for a in range(3) if a != axis)))
        if found.size == 0:
            return tuple(slice(0, n) for n in shape)  # type: ignore[return-value]
        extents.append((found[0] * BODY_STRIDE, found[-1] * BODY_STRIDE + BODY_STRIDE - 1))
    (k0, k1), (j0, j1), (i0, i1) = extents
    corners = np.array([[i, j, k, 1.0] for i in (i0, i1) for j in (j0, j1) for k in (k0, k1)])
    xyz = (corners @ np.linalg.inv(model_to_ijk).T)[:, :3]
    lo = np.floor(xyz.min(axis=0)).astype(int) - BODY_MARGIN_VOXELS
    hi = np.ceil(xyz.max(axis=0)).astype(int) + BODY_MARGIN_VOXELS + 1
    return tuple(  # type: ignore[return-value]
        slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(lo, hi, shape, strict=True)
    )


def nearest(
    labels_kji: np.ndarray, maps: list[resample.AxisMap], box: tuple[slice, slice, slice]
) -> np.ndarray:
    """Nearest-neighbour labels on the model voxels `box` (border clamped): [X, Y, Z]."""
    index: list[np.ndarray] = [np.zeros(0, dtype=np.intp)] * 3
    for model_axis, m in enumerate(maps):
        sl = box[model_axis]
        coords = np.floor(0.5 + m.coordinates(int(sl.start), int(sl.stop)))
        index[m.source_axis] = np.clip(coords, 0, labels_kji.shape[m.source_axis] - 1).astype(
            np.intp
        )
    picked = labels_kji[np.ix_(*index)]
    return np.ascontiguousarray(picked.transpose([m.source_axis for m in maps]))


def to_model_grid(
    hu_kji: np.ndarray,
    affine_lps: np.ndarray,
    spacing_mm: float,
    label_kji: np.ndarray | None = None,
) -> ModelGrid:
    """HU volume [k, j, i] with its LPS affine -> the model's grid (see module doc)."""
    model_affine, shape, model_to_ijk = model_geometry(hu_kji.shape, affine_lps, spacing_mm)
    maps = resample.axis_maps(model_to_ijk)
    box = body_box(hu_kji, model_to_ijk, shape)
    hu = resample.resample(hu_kji, maps, box)
    lo, hi = LUNG_WINDOW_HU
    image = np.clip((hu - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)[None]
    shift = np.eye(4)
    shift[:3, 3] = [sl.start for sl in box]
    return ModelGrid(
        image=image.astype(np.float32, copy=False),
        hu=hu,
        affine_ras=model_affine @ shift,
        label=None if label_kji is None else nearest(label_kji, maps, box).astype(np.uint8),
    )
