"""The CT Report: the common Report plus a lesion list, per-lung involvement and
the label map reference."""

from __future__ import annotations

from pydantic import BaseModel, Field

from aidx.inference.reports import Report


class BoxLps(BaseModel):
    """Axis-aligned box in patient coordinates (DICOM LPS, mm)."""

    min_mm: list[float]
    max_mm: list[float]


class BoxVoxel(BaseModel):
    """Inclusive voxel box in the series: i = column, j = row, k = slice index in
    position order (`slice_sop_instance_uids` of the label map)."""

    min_ijk: list[int]
    max_ijk: list[int]


class Lesion(BaseModel):
    number: int = Field(description="value of this lesion in the label map")
    volume_ml: float
    side: str  # right | left
    zone: str  # upper | middle | lower (thirds of that lung's head-foot extent)
    centroid_lps_mm: list[float]
    bbox_lps: BoxLps
    bbox_voxel: BoxVoxel
    mean_hu: float
    max_probability: float
    key_slice_k: int
    key_slice_sop_instance_uid: str
    overlay_url: str | None = None


class LungInvolvement(BaseModel):
    """One lung's measured volume and its involvement; when the finding was not
    assessed (too little lung), involvement is None, never a reassuring 0."""

    side: str
    lung_volume_ml: float
    involved_ml: float | None
    involvement_percent: float | None
    assessed: bool = True


class LabelMapRef(BaseModel):
    url: str
    media_type: str = "application/x-npz"
    shape_kji: list[int]
    description: str = (
        "npz: labels uint8 [k, j, i] (0 background, n = lesion n), affine_lps, "
        "sop_instance_uids and frame_numbers per slice k, segments (JSON)"
    )


class CtReport(Report):
    lesions: list[Lesion] = Field(default_factory=list)
    lungs: list[LungInvolvement] = Field(default_factory=list)
    label_map: LabelMapRef | None = None
    slices: int = 0
    spacing_mm: list[float] = Field(default_factory=list)
    inference_ms: float = 0.0
