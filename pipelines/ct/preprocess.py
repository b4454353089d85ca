"""The one preprocessing function used by training and serving (MONAI transforms):
orientation to RAS, resampling to the model's spacing, lung windowing.

A volume comes in as the series reader gives it (HU [k, j, i] + LPS affine) and
goes out channel-first in MONAI's convention: [1, X, Y, Z] with X towards the
patient's right, Y anterior, Z head, and an affine from those voxels to RAS mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, CopyItemsd, Orientationd, ScaleIntensityRanged, Spacingd

LUNG_WINDOW_HU = (-1350.0, 150.0)  # level -600, width 1500
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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


def transforms(spacing_mm: float, with_label: bool) -> Compose:
    keys = ["hu", "label"] if with_label else ["hu"]
    modes = ["bilinear", "nearest"][: len(keys)]
    return Compose(
        [
            Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(
                keys=keys,
                pixdim=(spacing_mm,) * 3,
                mode=modes,
                padding_mode="border",
                dtype=np.float32,
            ),
            CopyItemsd(keys=["hu"], names=["image"]),
            ScaleIntensityRanged(
                keys=["image"],
                a_min=LUNG_WINDOW_HU[0],
                a_max=LUNG_WINDOW_HU[1],
                b_min=0.0,
                b_max=1.0,
                clip=True,
            ),
        ]
    )


def to_model_grid(
    hu_kji: np.ndarray,
    affine_lps: np.ndarray,
    spacing_mm: float,
    label_kji: np.ndarray | None = None,
) -> ModelGrid:
    """HU volume [k, j, i] with its LPS affine -> the model's grid (see module doc)."""
    affine = torch.as_tensor(LPS_TO_RAS @ affine_lps, dtype=torch.float64)
    volume = torch.from_numpy(hu_kji).permute(2, 1, 0)[None]  # [1, i, j, k], a view
    data = {"hu": MetaTensor(volume, affine=affine)}
    if label_kji is not None:
        labels = torch.from_numpy(label_kji.astype(np.float32)).permute(2, 1, 0)[None]
        data["label"] = MetaTensor(labels, affine=affine)
    with torch.no_grad():
        out = transforms(spacing_mm, label_kji is not None)(data)
    image = out["image"]
    label = out.get("label")
    return ModelGrid(
        image=np.ascontiguousarray(image.numpy(), dtype=np.float32),
        hu=np.ascontiguousarray(out["hu"].numpy()[0], dtype=np.float32),
        affine_ras=image.affine.numpy().astype(np.float64),
        label=None if label is None else np.rint(label.numpy()[0]).astype(np.uint8),
    )
