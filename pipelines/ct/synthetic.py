"""Synthetic chest-CT phantoms with known pneumonia ground truth, and a writer that
turns one into a real DICOM series (pydicom), for training, tests and benchmarks.

Coordinates are DICOM patient coordinates (LPS, mm): +x the patient's left, +y
posterior, +z head. Voxels are indexed [k, j, i] = [slice, row, column] with
i along +x, j along +y and k along +z, as an axial series with
ImageOrientationPatient [1, 0, 0, 0, 1, 0] stores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage

LUNG_HU = -850.0
AIR_HU = -1000.0
TISSUE_HU = 40.0
FAT_HU = -100.0
BONE_HU = 600.0
LUNG_CENTRES_X_MM = (-80.0, 80.0)  # right lung at -x, left lung at +x (LPS)


@dataclass(frozen=True)
class LesionTruth:
    label: int
    side: str  # "right" | "left"
    volume_ml: float
    centroid_lps_mm: tuple[float, float, float]
    hu: float


@dataclass
class Phantom:
    hu: np.ndarray  # float32 [k, j, i]
    lesions: np.ndarray  # uint8 [k, j, i], 0 background, n = lesion n
    lung: np.ndarray  # bool [k, j, i], lungs including lesions
    affine_lps: np.ndarray  # (i, j, k, 1) -> LPS mm
    truth: list[LesionTruth]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(np.linalg.norm(self.affine_lps[:3, a])) for a in range(3))  # type: ignore[return-value]


def grid(shape_kji: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """An axial affine centred on the origin: spacing (i, j, k) in mm."""
    affine = np.diag([*spacing_mm, 1.0])
    extent = np.array([shape_kji[2], shape_kji[1], shape_kji[0]]) - 1
    affine[:3, 3] = -extent * np.asarray(spacing_mm) / 2
    return affine


def _axes(shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, ...]:
    k, j, i = (np.arange(n, dtype=np.float32) for n in shape)
    x = (affine[0, 3] + affine[0, 0] * i)[None, None, :]
    y = (affine[1, 3] + affine[1, 1] * j)[None, :, None]
    z = (affine[2, 3] + affine[2, 2] * k)[:, None, None]
    return x.astype(np.float32), y.astype(np.float32), z.astype(np.float32)


def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:  # type: ignore[no-untyped-def]
    return (
        ((x - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((z - centre[2]) / radii[2]) ** 2
    )


def _segment_mask(
    shape: tuple[int, int, int], affine: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxels within `radius` mm of segment a-b, computed in its bounding box only."""
    spacing = np.diag(affine)[:3]
    lo = (np.minimum(a, b) - radius - affine[:3, 3]) / spacing
    hi = (np.maximum(a, b) + radius - affine[:3, 3]) / spacing
    box = tuple(
        slice(max(int(np.floor(lo[ax])), 0), min(int(np.ceil(hi[ax])) + 1, shape[2 - ax]))
        for ax in (2, 1, 0)
    )
    sub = affine.copy()
    sub[:3, 3] += np.array([box[2].start, box[1].start, box[0].start]) * spacing
    sub_shape = tuple(s.stop - s.start for s in box)
    if min(sub_shape) <= 0:
        return box, np.zeros(sub_shape, dtype=bool)
    x, y, z = _axes(sub_shape, sub)  # type: ignore[arg-type]
    d = b - a
    t = ((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / max(float(d @ d), 1e-6)
    t = np.clip(t, 0, 1)
    dist2 = (x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2
    return box, dist2 <= radius**2


def _anatomy(shape, affine, rng) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    x, y, z = _axes(shape, affine)
    body_r = ((x / 170.0) ** 2 + ((y - 10.0) / 115.0) ** 2) * np.ones_like(z)
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    hu[body_r <= 1.0] = FAT_HU
    hu[body_r <= 0.85] = TISSUE_HU
    lung = np.zeros(shape, dtype=bool)
    scale = rng.uniform(0.9, 1.1)
    for cx in LUNG_CENTRES_X_MM:
        lung |= _ellipsoid(x, y, z, (cx, 5.0, 10.0), (58 * scale, 80 * scale, 125 * scale)) <= 1
    lung &= _ellipsoid(x, y, z, (25.0, -30.0, -60.0), (65.0, 55.0, 55.0)) > 1  # heart
    hu[lung] = LUNG_HU
    ribs = np.zeros(shape, dtype=bool)
    for zc in np.arange(-100.0, 140.0, 28.0) + rng.uniform(-5, 5):
        band = np.abs(z - zc - 0.15 * y) < 5
        ribs |= band & (body_r > 0.72) & (body_r < 0.8) & ~((np.abs(x) < 35) & (y < 0))
    hu[ribs & ~lung] = BONE_HU
    spine = ((x / 20.0) ** 2 + ((y - 85.0) / 20.0) ** 2 <= 1) * np.ones_like(z, dtype=bool)
    hu[spine] = BONE_HU * 0.7
    airways = [((0, -10, 160), (0, -10, 60), 9.0)]
    airways += [((0, -10, 60), (sx * 45, 0, 30), 6.0) for sx in (-1, 1)]
    for a, b, r in airways:
        box, mask = _segment_mask(shape, affine, np.array(a, float), np.array(b, float), r)
        hu[box][mask] = AIR_HU
    for sx in (-1, 1):  # vessels fan out from each hilum
        hilum = np.array([sx * 35.0, 5.0, 20.0])
        for _ in range(int(rng.integers(18, 30))):
            end = np.array([sx * 80.0, 5.0, 10.0]) + rng.uniform(-1, 1, 3) * [45, 65, 105]
            box, mask = _segment_mask(shape, affine, hilum, end, float(rng.uniform(1.2, 3.5)))
            sub = hu[box]
            sub[mask & lung[box]] = TISSUE_HU
    return hu, lung


def _lesion_blob(shape, affine, lung, rng) -> np.ndarray | None:  # type: ignore[no-untyped-def]
    """A lobulated blob (a few overlapping ellipsoids) clipped to the lung."""
    x, y, z = _axes(shape, affine)
    side = rng.choice([0, 1])
    cx = LUNG_CENTRES_X_MM[side]
    centre = np.array([cx, 5.0, 10.0]) + rng.uniform(-0.6, 0.6, 3) * [45, 60, 95]
    size = rng.uniform(7.0, 28.0)
    blob = np.zeros(shape, dtype=bool)
    for n in range(int(rng.integers(1, 4))):
        offset = 0 if n == 0 else rng.normal(0, size * 0.5, 3)
        radii = size * rng.uniform(0.6, 1.3, 3) * (1.0 if n == 0 else 0.7)
        blob |= _ellipsoid(x, y, z, centre + offset, radii) <= 1
    blob &= lung
    return blob if blob.sum() > 0 else None


def generate(
    rng: np.random.Generator,
    shape_kji: tuple[int, int, int] = (110, 100, 134),
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0),
    n_lesions: int | None = None,
    noise_hu: float | None = None,
) -> Phantom:
    """One phantom. `n_lesions` None: 0-4 at random (30 % of scans have none)."""
    affine = grid(shape_kji, spacing_mm)
    hu, lung = _anatomy(shape_kji, affine, rng)
    if n_lesions is None:
        n_lesions = 0 if rng.random() < 0.3 else int(rng.integers(1, 5))
    labels = np.zeros(shape_kji, dtype=np.uint8)
    truth: list[LesionTruth] = []
    for _ in range(n_lesions):
        blob = _lesion_blob(shape_kji, affine, lung, rng)
        if blob is None:
            continue
        blob &= labels == 0
        label = len(truth) + 1
        lesion_hu = float(rng.uniform(-700.0, 0.0))
        box = ndimage.find_objects(blob.astype(np.uint8))[0]
        noise = rng.normal(0, 1, tuple(s.stop - s.start for s in box)).astype(np.float32)
        texture = ndimage.gaussian_filter(noise, 1.5) * 3.0  # unit-ish spread
        inside = blob[box]
        sub = hu[box]
        sub[inside] = np.maximum(sub[inside], lesion_hu + 60.0 * texture[inside])  # vessels show
        labels[blob] = label
        kji = np.argwhere(blob).mean(axis=0)
        centroid = affine[:3, :3] @ kji[::-1] + affine[:3, 3]
        voxel_ml = float(np.prod(spacing_mm)) / 1000.0
        truth.append(
            LesionTruth(
                label=label,
                side="left" if centroid[0] > 0 else "right",
                volume_ml=float(blob.sum()) * voxel_ml,
                centroid_lps_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
                hu=lesion_hu,
            )
        )
    sigma = float(rng.uniform(10.0, 30.0)) if noise_hu is None else noise_hu
    hu += rng.normal(0.0, sigma, shape_kji).astype(np.float32)
    return Phantom(hu=hu, lesions=labels, lung=lung, affine_lps=affine, truth=truth)


def write_series(
    phantom: Phantom,
    directory: Path,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> list[Path]:
    """Write the phantom as a real axial CT series, one file per slice (explicit VR
    little endian, int16 with RescaleSlope/Intercept). Returns the files in slice order."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    col_mm, row_mm, step_mm = phantom.spacing_mm
    paths = []
    for k in range(phantom.hu.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.PatientID = "PHANTOM-001"
        ds.PatientName = "Phantom^Chest"
        ds.BodyPartExamined = "CHEST"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        position = phantom.affine_lps[:3, 3] + phantom.affine_lps[:3, 2] * k
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.SliceThickness = f"{step_mm:.4f}"
        ds.PixelSpacing = [f"{row_mm:.6f}", f"{col_mm:.6f}"]
        ds.Rows, ds.Columns = phantom.hu.shape[1], phantom.hu.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        stored = np.rint((phantom.hu[k] - intercept) / slope)
        ds.PixelData = np.clip(stored, -32768, 32767).astype("<i2").tobytes()
        path = directory / f"slice_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
