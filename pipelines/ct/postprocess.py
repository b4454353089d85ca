"""From a probability map on the model grid to lungs and lesions, in physical units.

All arrays here are on the model grid ([X, Y, Z], RAS: +X the patient's right,
+Z head; see `preprocess.ModelGrid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from aidx.pipelines.ct.preprocess import ModelGrid

LUNG_AIR_HU = -400.0
MIN_LUNG_ML = 100.0
STRUCTURE = np.ones((3, 3, 3), dtype=bool)
ZONES = ("upper", "middle", "lower")


@dataclass(frozen=True)
class Lungs:
    region: np.ndarray  # bool: per slice and side the lung's convex hull (gates lesions)
    side: np.ndarray  # int8: 0 outside, 1 right, 2 left (lung air with its holes filled)
    mid_x: float  # the midline between the lungs (X index)
    z_extent: dict[str, tuple[int, int]]  # per side, lowest and highest Z index

    def volume_ml(self, side: str, voxel_ml: float) -> float:
        return float(np.count_nonzero(self.side == SIDE_CODES[side])) * voxel_ml

    def total_ml(self, voxel_ml: float) -> float:
        """Both lungs' aerated volume: the measure of whether there are lungs at all."""
        return sum(self.volume_ml(side, voxel_ml) for side in SIDE_CODES)

    def side_of(self, x: float) -> str:
        return "right" if x > self.mid_x else "left"  # RAS: +X is the patient's right


SIDE_CODES = {"right": 1, "left": 2}


@dataclass(frozen=True)
class LesionMeasure:
    label: int  # value in the label map
    volume_ml: float
    side: str
    zone: str
    centroid_xyz: tuple[float, float, float]  # model grid voxel
    bbox_xyz: tuple[tuple[int, int, int], tuple[int, int, int]]  # inclusive, model grid
    mean_hu: float
    max_probability: float


def lung_mask(hu: np.ndarray, voxel_ml: float) -> Lungs:
    """Lungs from HU: air inside the body (outside air touches the in-plane border),
    in large components; each axial slice's lung filled to its convex hull per side,
    so consolidations inside the lung are part of it."""
    air = hu < LUNG_AIR_HU
    labels, n = ndimage.label(air)  # face connectivity: a diagonal must not leak out
    if n == 0:
        return _lungs_from(np.zeros_like(air))
    edges = [labels[0], labels[-1], labels[:, 0], labels[:, -1]]
    border = np.unique(np.concatenate([e.ravel() for e in edges]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1) * voxel_ml
    keep = sizes >= MIN_LUNG_ML
    keep[0] = False
    keep[border] = False
    return _lungs_from(keep[labels])


def _lungs_from(air: np.ndarray) -> Lungs:
    side = np.zeros(air.shape, dtype=np.int8)
    region = np.zeros(air.shape, dtype=bool)
    if not air.any():
        return Lungs(region, side, air.shape[0] / 2.0, {})
    xs = np.flatnonzero(air.any(axis=(1, 2)))
    mid = (xs[0] + xs[-1]) / 2.0
    x = np.arange(air.shape[0])[:, None]
    extent: dict[str, tuple[int, int]] = {}
    for name, code in SIDE_CODES.items():
        half = x > mid if name == "right" else x <= mid
        zs = []
        for z in range(air.shape[2]):
            plane = air[:, :, z] & half
            if plane.sum() >= 4:
                region[:, :, z] |= convex_hull_image(plane) & half
                side[:, :, z][ndimage.binary_fill_holes(plane)] = code
                zs.append(z)
        if zs:
            extent[name] = (zs[0], zs[-1])
    return Lungs(region, side, float(mid), extent)


def zone_of(z: float, extent: tuple[int, int]) -> str:
    low, high = extent
    fraction = (high - z) / max(high - low, 1)  # 0 at the apex, 1 at the base
    return ZONES[min(int(fraction * 3), 2)]


def lesions(
    grid: ModelGrid,
    probability: np.ndarray,
    lungs: Lungs,
    *,
    threshold: float,
    min_volume_ml: float,
) -> tuple[np.ndarray, list[LesionMeasure]]:
    """Label map (uint16, 1..n by decreasing volume) and measurements."""
    voxel_ml = grid.voxel_ml
    found = (probability >= threshold) & lungs.region
    labels, n = ndimage.label(found, STRUCTURE)
    if n == 0:
        return np.zeros(found.shape, dtype=np.uint16), []
    index = np.arange(1, n + 1)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    kept = [int(i) for i in index[counts * voxel_ml >= min_volume_ml]]
    kept.sort(key=lambda i: -counts[i - 1])
    remap = np.zeros(n + 1, dtype=np.uint16)
    remap[kept] = np.arange(1, len(kept) + 1)
    out = remap[labels]
    measures = []
    boxes = ndimage.find_objects(out)
    for new, box in enumerate(boxes, start=1):
        if box is None:
            continue
        inside = out[box] == new
        coords = np.argwhere(inside) + [s.start for s in box]
        centroid = coords.mean(axis=0)
        side = lungs.side_of(float(centroid[0]))
        measures.append(
            LesionMeasure(
                label=new,
                volume_ml=float(inside.sum()) * voxel_ml,
                side=side,
                zone=zone_of(float(centroid[2]), lungs.z_extent.get(side, (0, found.shape[2]))),
                centroid_xyz=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
                bbox_xyz=(
                    (box[0].start, box[1].start, box[2].start),
                    (box[0].stop - 1, box[1].stop - 1, box[2].stop - 1),
                ),
                mean_hu=float(grid.hu[box][inside].mean()),
                max_probability=float(probability[box][inside].max()),
            )
        )
    return out, measures


@dataclass(frozen=True)
class Involvement:
    lung_ml: float
    involved_ml: float

    @property
    def percent(self) -> float:
        return 100.0 * self.involved_ml / self.lung_ml if self.lung_ml > 0 else 0.0


def involvement(label_map: np.ndarray, lungs: Lungs, voxel_ml: float) -> dict[str, Involvement]:
    """Per side: lesion volume over lung volume, a lung being its filled air plus its
    lesions (a consolidation is not air but is still lung)."""
    out = {}
    lesion = label_map > 0
    x = np.arange(label_map.shape[0])[:, None, None]
    for name, code in SIDE_CODES.items():
        half = x > lungs.mid_x if name == "right" else x <= lungs.mid_x
        hit = lesion & half
        total = int(np.count_nonzero((lungs.side == code) | hit))
        out[name] = Involvement(total * voxel_ml, int(np.count_nonzero(hit)) * voxel_ml)
    return out
