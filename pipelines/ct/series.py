"""Chest CT series assembly: DICOM instances (single- or multi-frame) in, one
geometry-checked volume in Hounsfield units out. Damaged files get the codes every
DICOM route shares (aidx.inference.dicom_input), naming the file's place in the upload.

Slices are ordered by their position along the slice normal (ImagePositionPatient
projected on ImageOrientationPatient's normal), never by InstanceNumber. Whatever
cannot make one regular axial volume is refused with a 422 and a code that says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from aidx.inference.cohort import study_context
from aidx.inference.dicom_input import (
    DEFAULT_IMAGE_LIMITS,
    DicomCode,
    check_pixel_budget,
    decode_pixels,
    dicom_error,
    read_dicom,
    require_image,
    require_modality,
)
from aidx.inference.errors import BadRequest, Unprocessable
from aidx.inference.reports import SourceRef
from aidx.inference.settings_sections import ImageLimits
from aidx.pipelines.ct.content import check_body_part

MIN_SLICES = 8  # fewer cannot be a chest CT series
ORIENTATION_TOL = 1e-3  # direction cosines
SPACING_REL_TOL = 1e-3  # pixel spacing
DUPLICATE_TOL_MM = 0.01
GAP_FACTOR = 1.5  # a step this many times the median step means a missing slice
UNIFORM_REL_TOL = 0.05  # steps may differ from the median by 5 % (at least 0.1 mm)
TILT_TOL_MM = 0.5  # in-plane drift of the slice origins (gantry tilt / shear)
AXIAL_MIN_COS = 0.8  # |normal . z| below this (about 37 degrees) is not axial
NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")  # implicit, explicit VR


@dataclass(frozen=True)
class Frame:
    """One image plane: its geometry and where its pixels are."""

    dataset: Dataset
    frame_index: int | None  # None: a single-frame instance
    position_mm: np.ndarray  # ImagePositionPatient (LPS)
    orientation: np.ndarray  # ImageOrientationPatient, 6 cosines
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns)
    rows: int
    columns: int
    slope: float
    intercept: float
    image_type: tuple[str, ...]
    instance: int | None = None  # the instance's 1-based position in the upload
    limits: ImageLimits = DEFAULT_IMAGE_LIMITS  # checked before its pixels are decoded
    stored_range: tuple[int, int] | None = None  # BitsStored's values; None: not integers

    @property
    def whole_hu(self) -> bool:
        """Whether this plane's HU are whole numbers: integer stored values under the
        usual CT rescale (slope 1, a whole intercept)."""
        return self.stored_range is not None and self.slope == 1.0 and self.intercept.is_integer()

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.get("SOPInstanceUID", ""))

    @property
    def series_uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", ""))

    def pixels(self) -> np.ndarray:
        array = native_pixels(self.dataset) if self.frame_index is None else None
        if array is None:
            array = decode_pixels(self.dataset, self.limits, instance=self.instance)
        return array if self.frame_index is None else array[self.frame_index]

    def fill_hu(self, out: np.ndarray) -> bool:
        """Write this plane's HU into `out`: stored value x slope + intercept. An int16
        `out` takes them only when `whole_hu` and they fit (exact); else nothing is
        written and False says so."""
        stored = self.pixels()
        if out.dtype == np.int16:
            if not (self.whole_hu and _fits_int16(stored, self)):
                return False
            _add_whole(stored, int(self.intercept), out)
            return True
        if self.slope == 1.0:  # the usual CT case: exact in float32, one pass
            np.add(stored, np.float32(self.intercept), out=out, dtype=np.float32)
            return True
        np.multiply(stored, self.slope, out=out, casting="unsafe")  # float64, then rounded
        out += np.float32(self.intercept)
        return True


def _add_whole(stored: np.ndarray, intercept: int, out: np.ndarray) -> None:
    """out = stored + intercept, the sum known to fit int16. 16-bit words add in int16
    arithmetic (one pass): modulo 2**16, which is exact for a sum that fits."""
    if stored.dtype.itemsize == 2 and stored.dtype.kind in "iu":
        np.add(stored.view(np.int16), np.int16((intercept + 32768) % 65536 - 32768), out=out)
    else:
        np.add(stored, np.int64(intercept), out=out, casting="unsafe")


def _fits_int16(stored: np.ndarray, frame: Frame) -> bool:
    """Whether stored + intercept stays within int16: by the header's range when that
    suffices, else by the plane's own values."""
    info, shift = np.iinfo(np.int16), int(frame.intercept)
    low, high = frame.stored_range or (0, 0)
    if low + shift >= info.min and high + shift <= info.max:
        return True
    return bool(int(stored.min()) + shift >= info.min and int(stored.max()) + shift <= info.max)


def stored_range(ds: Dataset) -> tuple[int, int] | None:
    """The stored values BitsStored and PixelRepresentation allow (integer pixel data
    of at most 16 bits, as pydicom and `native_pixels` give it), else None."""
    allocated, bits = ds.get("BitsAllocated"), ds.get("BitsStored")
    signed = ds.get("PixelRepresentation")
    if allocated not in (8, 16) or bits not in range(1, allocated + 1) or signed not in (0, 1):
        return None
    bits = int(bits)
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def volume_hu(frames: list[Frame]) -> np.ndarray:
    """The planes' HU [k, j, i]: int16 when they are whole numbers that fit (the usual
    CT series: half the memory of float32, the same values), else float32. A plane
    that int16 cannot hold turns the volume float32 from there on (whole numbers of
    int16 are exact in float32)."""
    first = frames[0]
    whole = all(frame.whole_hu for frame in frames)
    hu = np.empty((len(frames), first.rows, first.columns), np.int16 if whole else np.float32)
    for k, frame in enumerate(frames):
        if not frame.fill_hu(hu[k]):
            hu = hu.astype(np.float32)
            frame.fill_hu(hu[k])
    return hu


def native_pixels(ds: Dataset) -> np.ndarray | None:
    """A single-frame, uncompressed little-endian 16-bit monochrome image read straight
    from its PixelData, as pydicom's pixel_array gives it (unused high bits masked or
    sign-extended), without pydicom's per-call set-up; None for anything else
    (the caller decodes it through pydicom)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    header = (ds.get("BitsAllocated"), ds.get("SamplesPerPixel", 1), ds.get("NumberOfFrames", 1))
    if syntax not in NATIVE_LITTLE_ENDIAN or header != (16, 1, 1) or "PixelData" not in ds:
        return None
    bits = ds.get("BitsStored")
    signed = ds.get("PixelRepresentation")
    data = ds.PixelData
    rows, columns = int(ds.Rows), int(ds.Columns)
    if bits not in range(1, 17) or signed not in (0, 1) or len(data) != 2 * rows * columns:
        return None
    array = np.frombuffer(data, dtype="<i2" if signed else "<u2").reshape(rows, columns)
    if bits == 16:
        return array
    shift = 16 - int(bits)  # pydicom's correct_unused_bits
    return np.right_shift(np.left_shift(array, shift), shift)


@dataclass
class CtVolume:
    """HU voxels indexed [slice k, row j, column i]; `affine_lps` maps (i, j, k, 1)
    to patient coordinates (DICOM LPS, mm). The HU are int16 where they are whole
    numbers that fit (`volume_hu`: the usual CT rescale), float32 otherwise."""

    hu: np.ndarray
    affine_lps: np.ndarray
    spacing_mm: tuple[float, float, float]  # (column step, row step, slice step)
    source: SourceRef
    sop_instance_uids: list[str]  # per slice k (frame number in `frame_numbers`)
    frame_numbers: list[int | None]
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        k, j, i = self.hu.shape
        return (k, j, i)

    def voxel_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        return ijk @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3]


def _refuse(code: str, message: str, **details: Any) -> Unprocessable:
    return Unprocessable(message, code=code, **details)


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise _refuse("missing_geometry", f"{what} is missing or malformed")
    return out


def _item(ds: Dataset, sequence: str) -> Dataset | None:
    seq = ds.get(sequence)
    return seq[0] if seq else None


def _frame_geometry(groups: list[Dataset]) -> dict[str, Any]:
    """Merge per-frame and shared functional groups (per-frame wins)."""
    found: dict[str, Any] = {}
    for group in groups:
        for seq, attrs in (
            ("PlanePositionSequence", ("ImagePositionPatient",)),
            ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
            ("PixelMeasuresSequence", ("PixelSpacing",)),
            ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept")),
            ("CTImageFrameTypeSequence", ("FrameType",)),
        ):
            item = _item(group, seq)
            for attr in attrs:
                if item is not None and attr in item and attr not in found:
                    found[attr] = item.get(attr)
    return found


def _make_frame(
    ds: Dataset,
    index: int | None,
    attrs: dict[str, Any],
    instance: int | None,
    limits: ImageLimits,
) -> Frame:
    iop = _floats(attrs.get("ImageOrientationPatient"), 6, "ImageOrientationPatient")
    ipp = _floats(attrs.get("ImagePositionPatient"), 3, "ImagePositionPatient")
    spacing = _floats(attrs.get("PixelSpacing"), 2, "PixelSpacing")
    if np.any(spacing <= 0):
        raise _refuse("missing_geometry", "PixelSpacing must be positive")
    slope = attrs.get("RescaleSlope")
    intercept = attrs.get("RescaleIntercept")
    kinds = attrs.get("ImageType") or attrs.get("FrameType") or ()
    return Frame(
        dataset=ds,
        frame_index=index,
        position_mm=ipp,
        orientation=iop,
        pixel_spacing_mm=(float(spacing[0]), float(spacing[1])),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        slope=1.0 if slope is None else float(slope),
        intercept=0.0 if intercept is None else float(intercept),
        image_type=tuple(str(t).strip().upper() for t in kinds),
        instance=instance,
        limits=limits,
        stored_range=stored_range(ds),
    )


def frames_of(
    ds: Dataset, instance: int | None = None, limits: ImageLimits = DEFAULT_IMAGE_LIMITS
) -> list[Frame]:
    """The image planes of one instance (`instance`: its position in the upload),
    checked to be CT with pixels within `limits`."""
    require_image(ds, instance=instance)
    require_modality(ds, {"CT"}, "CT", instance=instance)
    if "Rows" not in ds or "Columns" not in ds:
        raise _refuse("no_pixel_data", "an instance has no pixel data")
    check_pixel_budget(ds, limits, instance=instance)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds:  # enhanced (multi-frame) CT
        shared = list(ds.get("SharedFunctionalGroupsSequence") or [])
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if len(per_frame) != n_frames:
            raise _refuse("missing_geometry", "per-frame functional groups do not match frames")
        frames = []
        for index, group in enumerate(per_frame):
            attrs = _frame_geometry([group, *shared])
            attrs.setdefault("ImageType", ds.get("ImageType"))
            frame_index = index if n_frames > 1 else None
            frames.append(_make_frame(ds, frame_index, attrs, instance, limits))
        return frames
    if n_frames != 1:
        raise _refuse("missing_geometry", "a multi-frame instance without functional groups")
    attrs = {name: ds.get(name) for name in (
        "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
        "RescaleSlope", "RescaleIntercept", "ImageType",
    )}  # fmt: skip
    return [_make_frame(ds, None, attrs, instance, limits)]


def _check_uniform(frames: list[Frame]) -> None:
    first = frames[0]
    for frame in frames[1:]:
        if np.max(np.abs(frame.orientation - first.orientation)) > ORIENTATION_TOL:
            raise _refuse("inconsistent_orientation", "slices have different orientations")
        if (frame.rows, frame.columns) != (first.rows, first.columns):
            raise _refuse("inconsistent_size", "slices have different matrix sizes")
        a, b = np.asarray(frame.pixel_spacing_mm), np.asarray(first.pixel_spacing_mm)
        if np.max(np.abs(a - b) / b) > SPACING_REL_TOL:
            raise _refuse("inconsistent_pixel_spacing", "slices have different pixel spacing")


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 0.5:
        raise _refuse("missing_geometry", "ImageOrientationPatient is degenerate")
    return normal / norm


def _check_steps(frames: list[Frame], normal: np.ndarray) -> float:
    """The slice step (mm) of frames sorted along the normal, or a refusal."""
    positions = np.stack([f.position_mm for f in frames])
    along = positions @ normal
    steps = np.diff(along)
    if np.any(steps < DUPLICATE_TOL_MM):
        k = int(np.argmax(steps < DUPLICATE_TOL_MM))
        raise _refuse(
            "duplicate_slice_position",
            f"two slices share the position {along[k]:.2f} mm along the normal",
        )
    step = float(np.median(steps))
    if np.any(steps > GAP_FACTOR * step):
        k = int(np.argmax(steps > GAP_FACTOR * step))
        raise _refuse(
            "slice_gap",
            f"a gap of {steps[k]:.2f} mm between slices {k} and {k + 1} (step {step:.2f} mm)",
        )
    if np.max(np.abs(steps - step)) > max(0.1, UNIFORM_REL_TOL * step):
        raise _refuse("nonuniform_slice_spacing", "the slice spacing is not uniform")
    drift = positions - positions[0] - np.outer(along - along[0], normal)
    if np.max(np.linalg.norm(drift, axis=1)) > TILT_TOL_MM:
        raise _refuse("gantry_tilt", "slice origins drift in-plane (tilted gantry or sheared)")
    return step


def _source(ds: Dataset, frame: Frame) -> SourceRef:
    def text(name: str) -> str | None:
        value = ds.get(name)
        return None if value is None else str(value)

    return SourceRef(
        patient_id=text("PatientID"),
        study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
        modality="CT",
        rows=frame.rows,
        columns=frame.columns,
        **study_context(ds),
    )


def _check_series_pixels(frames: list[Frame], limits: ImageLimits) -> None:
    """The volume is allocated before any slice is decoded: bound it first."""
    total = len(frames) * frames[0].rows * frames[0].columns
    if total > limits.max_total_pixels:
        raise dicom_error(
            DicomCode.too_many_pixels,
            f"the series declares {total} voxels; the limit is {limits.max_total_pixels}",
        )


def assemble(
    datasets: Iterable[Dataset],
    *,
    min_slices: int = MIN_SLICES,
    limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
) -> CtVolume:
    frames = [frame for n, ds in enumerate(datasets, 1) for frame in frames_of(ds, n, limits)]
    if not frames:
        raise BadRequest("the upload holds no DICOM instances", code="empty_series")
    series = {f.series_uid for f in frames}
    if len(series) > 1:
        raise _refuse("mixed_series", f"the upload mixes {len(series)} series; send one")
    if any("LOCALIZER" in f.image_type for f in frames):
        raise _refuse("localizer", "a localizer (scout) image is not a CT volume")
    check_body_part(f.dataset.get("BodyPartExamined") for f in frames)
    if len(frames) < min_slices:
        raise _refuse(
            "too_few_slices",
            f"{len(frames)} slice(s); a chest CT series needs at least {min_slices}",
            slices=len(frames),
        )
    _check_uniform(frames)
    _check_series_pixels(frames, limits)
    normal = slice_normal(frames[0].orientation)
    if abs(normal[2]) < AXIAL_MIN_COS:
        raise _refuse("not_axial", "the series is not axial (slice normal far from head-foot)")
    frames.sort(key=lambda f: float(f.position_mm @ normal))
    first = frames[0]
    if len(frames) > 1:
        step = _check_steps(frames, normal)
    else:  # a one-slice volume (only when min_slices allows it): its nominal thickness
        step = float(first.dataset.get("SliceThickness") or 1.0)
    row_mm, col_mm = first.pixel_spacing_mm
    affine = np.eye(4)
    affine[:3, 0] = first.orientation[:3] * col_mm  # i: along a row (next column)
    affine[:3, 1] = first.orientation[3:] * row_mm  # j: down a column (next row)
    affine[:3, 2] = normal * step
    affine[:3, 3] = first.position_mm
    return CtVolume(
        hu=volume_hu(frames),
        affine_lps=affine,
        spacing_mm=(col_mm, row_mm, step),
        source=_source(first.dataset, first),
        sop_instance_uids=[f.sop_instance_uid for f in frames],
        frame_numbers=[None if f.frame_index is None else f.frame_index + 1 for f in frames],
    )


def upload_sha256(blobs: Iterable[bytes]) -> str:
    """The SHA-256 of every instance's SHA-256, whatever order they came in."""
    digest = hashlib.sha256()
    for instance in sorted(hashlib.sha256(blob).digest() for blob in blobs):
        digest.update(instance)
    return digest.hexdigest()


def assemble_bytes(
    blobs: Iterable[bytes],
    *,
    min_slices: int = MIN_SLICES,
    limits: ImageLimits = DEFAULT_IMAGE_LIMITS,
) -> CtVolume:
    """Assemble uploaded files; a damaged one is refused with the shared DICOM code
    (aidx.inference.dicom_input) and its position in the upload."""
    datasets = (read_dicom(blob, instance=n) for n, blob in enumerate(blobs, 1))
    return assemble(datasets, min_slices=min_slices, limits=limits)
