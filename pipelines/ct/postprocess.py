"""From a probability map on the model grid to lungs and lesions, in physical units.

All arrays here are on the model grid ([X, Y, Z], RAS: +X the patient's right,
+Z head; see `preprocess.ModelGrid`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from skimage.measure import grid_points_in_poly

from aidx.pipelines.ct.preprocess import ModelGrid

LUNG_AIR_HU = -400.0
MIN_LUNG_ML = 100.0
STRUCTURE = np.ones((3, 3, 3), dtype=bool)
ZONES = ("upper", "middle", "lower")
MIN_SLICE_PX = 4  # a side's slice with fewer air pixels is not lung
IN_PLANE = np.zeros((3, 3, 3), dtype=bool)  # 4-connectivity within an axial slice
IN_PLANE[:, :, 1] = ndimage.generate_binary_structure(2, 1)
DIAMOND = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # pixel edge midpoints, doubled


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
    x = np.arange(air.shape[0])[:, None, None]
    extent: dict[str, tuple[int, int]] = {}
    for name, code in SIDE_CODES.items():
        half = air & (x > mid if name == "right" else x <= mid)
        zs = np.flatnonzero(np.count_nonzero(half, axis=(0, 1)) >= MIN_SLICE_PX)
        if zs.size == 0:
            continue
        planes = np.zeros_like(half)
        planes[:, :, zs] = half[:, :, zs]
        side[fill_holes_per_slice(planes)] = code
        by_slice = np.ascontiguousarray(half.transpose(2, 0, 1))
        for z in zs:
            region[:, :, z] |= hull_image(by_slice[z])
        extent[name] = (int(zs[0]), int(zs[-1]))
    return Lungs(region, side, float(mid), extent)


def fill_holes_per_slice(planes: np.ndarray) -> np.ndarray:
    """ndimage.binary_fill_holes of each axial slice [:, :, z], all at once: holes are
    background components (4-connected in the slice) that touch no in-plane edge."""
    background, _ = ndimage.label(~planes, IN_PLANE)
    edges = [background[0], background[-1], background[:, 0], background[:, -1]]
    outside = np.zeros(int(background.max()) + 1, dtype=bool)
    outside[np.concatenate([e.ravel() for e in edges])] = True
    outside[0] = True  # label 0 is the planes themselves
    return planes | ~outside[background]


def hull_image(plane: np.ndarray) -> np.ndarray:
    """skimage's convex_hull_image of `plane`, computed on the pixels' bounding box
    only: the hull of each row's first and last pixel, each taken as the diamond of
    its edge midpoints (the hull of all pixels), rasterised by the same
    grid_points_in_poly (coordinates are half-integers: the shift is exact)."""
    rows, cols = np.nonzero(plane)
    starts = np.flatnonzero(np.diff(rows, prepend=-1))
    ends = np.append(starts[1:], rows.size) - 1
    keep = np.union1d(starts, ends)
    r0, c0 = rows[0], cols.min()
    shape = (int(rows[-1] - r0 + 1), int(cols.max() - c0 + 1))
    ends_rc = np.stack([rows[keep] - r0, cols[keep] - c0], axis=1)
    doubled = (2 * ends_rc[:, None, :] + DIAMOND[None]).reshape(-1, 2)  # integers
    width = 2 * shape[1] + 2
    keys = np.unique((doubled[:, 0] + 1) * width + doubled[:, 1] + 1)  # duplicates out
    points = np.stack([keys // width - 1, keys % width - 1], axis=1) / 2.0
    hull = ConvexHull(points)
    inside = grid_points_in_poly(shape, hull.points[hull.vertices], binarize=False) >= 1
    out = np.zeros(plane.shape, dtype=bool)
    out[r0 : r0 + shape[0], c0 : c0 + shape[1]] = inside
    return out


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
    found = (probability >= threshold) & lungs.region
    labels, n = ndimage.label(found, STRUCTURE)
    if n == 0:
        return np.zeros(found.shape, dtype=np.uint16), []
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    kept = np.flatnonzero(counts * grid.voxel_ml >= min_volume_ml) + 1
    kept = kept[np.argsort(-counts[kept - 1], kind="stable")]  # by decreasing volume
    remap = np.zeros(n + 1, dtype=np.uint16)
    remap[kept] = np.arange(1, len(kept) + 1)
    out = remap[labels]
    return out, measure(out, len(kept), grid, probability, lungs)


def measure(
    labels: np.ndarray, n: int, grid: ModelGrid, probability: np.ndarray, lungs: Lungs
) -> list[LesionMeasure]:
    """Each component's volume, centroid, box, mean HU and peak probability, all
    components at once (bincount over the voxels, find_objects for the boxes)."""
    inside = np.flatnonzero(labels)
    which = labels.ravel()[inside]
    counts = np.bincount(which, minlength=n + 1)[1:]
    centroid = np.stack(
        [np.bincount(which, axis_index, minlength=n + 1)[1:] / counts
         for axis_index in np.unravel_index(inside, labels.shape)],
        axis=1,
    )  # fmt: skip
    mean_hu = np.bincount(which, grid.hu.ravel()[inside], minlength=n + 1)[1:] / counts
    boxes = ndimage.find_objects(labels, max_label=n)
    peak = [float(probability[box][labels[box] == i].max()) if box is not None else 0.0
            for i, box in enumerate(boxes, 1)]  # fmt: skip
    out = []
    for i, box in enumerate(boxes):
        assert box is not None  # every kept label has voxels
        x, y, z = (float(v) for v in centroid[i])
        side = lungs.side_of(x)
        out.append(
            LesionMeasure(
                label=i + 1,
                volume_ml=float(counts[i]) * grid.voxel_ml,
                side=side,
                zone=zone_of(z, lungs.z_extent.get(side, (0, labels.shape[2]))),
                centroid_xyz=(x, y, z),
                bbox_xyz=(
                    (box[0].start, box[1].start, box[2].start),
                    (box[0].stop - 1, box[1].stop - 1, box[2].stop - 1),
                ),
                mean_hu=float(mean_hu[i]),
                max_probability=float(peak[i]),
            )
        )
    return out


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
