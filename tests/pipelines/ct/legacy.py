"""The CT pre- and postprocessing as they were before issue 16, kept as test oracles:
MONAI's Orientationd + Spacingd over the whole series, per-slice convex hulls and
hole filling, per-lesion loops, and ndimage.affine_transform back onto the series."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Orientationd, Spacingd
from scipy import ndimage
from skimage.morphology import convex_hull_image

from aidx.pipelines.ct.evidence import MAX_LABELS, original_to_model
from aidx.pipelines.ct.preprocess import LPS_TO_RAS, ModelGrid
from aidx.pipelines.ct.series import CtVolume

STRUCTURE = np.ones((3, 3, 3), dtype=bool)
SIDE_CODES = {"right": 1, "left": 2}


def monai_hu(
    hu_kji: np.ndarray, affine_lps: np.ndarray, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """The whole-series HU grid as MONAI resampled it (bilinear, border): (hu, affine)."""
    affine = torch.as_tensor(LPS_TO_RAS @ affine_lps, dtype=torch.float64)
    volume = torch.from_numpy(hu_kji).permute(2, 1, 0)[None]
    keys = ["hu"]
    transforms = Compose([
        Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys=keys, pixdim=(spacing_mm,) * 3, mode="bilinear", padding_mode="border",
                 dtype=np.float32),
    ])  # fmt: skip
    with torch.no_grad():
        out = transforms({"hu": MetaTensor(volume, affine=affine)})["hu"]
    return np.asarray(out.numpy()[0], dtype=np.float32), out.affine.numpy().astype(np.float64)


def lungs_from(air: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, dict[str, tuple[int, int]]]:
    """(region, side, mid_x, z_extent) by the per-slice loop."""
    side = np.zeros(air.shape, dtype=np.int8)
    region = np.zeros(air.shape, dtype=bool)
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
    return region, side, float(mid), extent


def lesion_measures(grid: ModelGrid, labels: np.ndarray) -> list[dict[str, object]]:
    """Per lesion, by the per-component loop: volume, centroid, box, mean HU."""
    out = []
    for new, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == new
        coords = np.argwhere(inside) + [s.start for s in box]
        out.append({
            "label": new,
            "volume_ml": float(inside.sum()) * grid.voxel_ml,
            "centroid_xyz": tuple(float(c) for c in coords.mean(axis=0)),
            "bbox_xyz": ((box[0].start, box[1].start, box[2].start),
                         (box[0].stop - 1, box[1].stop - 1, box[2].stop - 1)),
            "mean_hu": float(grid.hu[box][inside].mean()),
        })  # fmt: skip
    return out


def label_map_on_series(labels_xyz: np.ndarray, volume: CtVolume, grid: ModelGrid) -> np.ndarray:
    m = original_to_model(volume, grid)
    out = np.zeros(volume.shape, dtype=np.uint8)
    ndimage.affine_transform(
        np.minimum(labels_xyz, MAX_LABELS).astype(np.uint8), m[:3, :3], offset=m[:3, 3],
        output_shape=volume.shape, output=out, order=0, mode="constant", cval=0,
    )  # fmt: skip
    return out
