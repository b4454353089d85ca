"""The series' HU kept as int16 where they are whole numbers that fit (the usual CT
rescale), float32 otherwise, with the same values either way; the resampler and the
files reading either dtype alike; the HU file written while the model runs and taken
back when the analysis fails."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest

from aidx.inference.dicom_input import read_dicom
from aidx.inference.errors import NotFound
from aidx.inference.reports import ReportStore
from aidx.pipelines.ct import resample, slices
from aidx.pipelines.ct.preprocess import model_geometry, to_model_grid
from aidx.pipelines.ct.series import CtVolume, assemble_bytes


def _rewritten(
    blobs: list[bytes], edit: dict[str, object], middle_pixels: bytes | None = None
) -> list[bytes]:
    """The series with `edit` on every file and `middle_pixels` in the middle one."""
    out = []
    for n, blob in enumerate(blobs):
        ds = read_dicom(blob)
        for name, value in edit.items():
            setattr(ds, name, value)
        if n == len(blobs) // 2 and middle_pixels is not None:
            ds.PixelData = middle_pixels
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def _float32_hu(blobs: list[bytes], uids: list[str]) -> np.ndarray:
    """HU as the float32 path computes them (stored x slope, then + intercept)."""
    by_uid = {}
    for blob in blobs:
        ds = pydicom.dcmread(io.BytesIO(blob))
        hu = np.empty(ds.pixel_array.shape, dtype=np.float32)
        np.multiply(ds.pixel_array, float(ds.RescaleSlope), out=hu, casting="unsafe")
        hu += np.float32(float(ds.RescaleIntercept))
        by_uid[ds.SOPInstanceUID] = hu
    return np.stack([by_uid[uid] for uid in uids])


def test_the_usual_rescale_is_int16_with_the_same_values(small_blobs: list[bytes]) -> None:
    volume = assemble_bytes(small_blobs)
    assert volume.hu.dtype == np.int16
    assert np.array_equal(volume.hu, _float32_hu(small_blobs, volume.sop_instance_uids))


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.5), (0.5, -1024.0)])
def test_fractional_hu_stay_float32(
    small_blobs: list[bytes], slope: float, intercept: float
) -> None:
    blobs = _rewritten(small_blobs, {"RescaleSlope": slope, "RescaleIntercept": intercept})
    volume = assemble_bytes(blobs)
    assert volume.hu.dtype == np.float32
    assert np.array_equal(volume.hu, _float32_hu(blobs, volume.sop_instance_uids))


def test_a_plane_int16_cannot_hold_turns_the_volume_float32(small_blobs: list[bytes]) -> None:
    """Unsigned 16-bit values up to 65535 (intercept 0): whole numbers, but one plane
    holds 40000; the planes before it were int16 and keep their exact values."""
    ds = read_dicom(small_blobs[0])
    words = np.random.default_rng(2).integers(0, 30000, ds.Rows * ds.Columns).astype("<u2")
    edit = {"PixelRepresentation": 0, "BitsStored": 16, "HighBit": 15, "RescaleIntercept": 0,
            "PixelData": words.tobytes()}  # fmt: skip
    words[:7] = [0, 1, 2, 40000, 65535, 32767, 32768]
    blobs = _rewritten(small_blobs, edit, words.tobytes())
    volume = assemble_bytes(blobs)
    assert volume.hu.dtype == np.float32
    expected = _float32_hu(blobs, volume.sop_instance_uids)
    assert np.array_equal(volume.hu, expected)
    assert expected.max() == 65535.0


def test_the_grid_is_the_same_from_int16_or_float32(small_blobs: list[bytes]) -> None:
    volume = assemble_bytes(small_blobs)
    as_int16 = to_model_grid(volume.hu, volume.affine_lps, 3.0)
    as_float32 = to_model_grid(volume.hu.astype(np.float32), volume.affine_lps, 3.0)
    assert np.array_equal(as_int16.hu, as_float32.hu)
    assert np.array_equal(as_int16.image, as_float32.image)


def test_slices_in_blocks_are_the_whole_slab_product() -> None:
    """Each output voxel is the same sparse sum, block by block or all at once (one
    row a block here, against one block of every row)."""
    rng = np.random.default_rng(3)
    volume = rng.integers(-1024, 3000, (30, 20, 24)).astype(np.int16)
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    _, shape, model_to_ijk = model_geometry(volume.shape, affine, 3.0)
    maps = resample.axis_maps(model_to_ijk)
    axis = next(i for i, m in enumerate(maps) if m.source_axis == 0)  # the model's slice axis
    coords = maps[axis].coordinates(0, shape[axis])
    matrix = resample.weights(coords, volume.shape[0], maps[axis].sigma).astype(np.float32)
    k0, k1 = resample.support(matrix)
    whole_rows = (0, volume.shape[1])
    at_once = resample.across_slices(volume, matrix[:, k0:k1], k0, whole_rows, block_voxels=1 << 30)
    by_row = resample.across_slices(volume, matrix[:, k0:k1], k0, whole_rows, block_voxels=1)
    assert np.array_equal(by_row, at_once)


@pytest.mark.parametrize("clipped", [False, True])
def test_int16_hu_file_is_np_save_of_the_clipped_volume(clipped: bool) -> None:
    hu = np.random.default_rng(0).integers(-1024, 3072, (5, 7, 9)).astype(np.int16)
    if clipped:
        hu[0, 0, :2] = [-3024, 4000]
    buffer = io.BytesIO()
    np.save(buffer, np.clip(hu, *slices.HU_RANGE).astype("<i2"), allow_pickle=False)
    assert slices.hu_npy(hu) == buffer.getvalue()
    assert slices.hu_npy(hu.astype(np.float32)) == buffer.getvalue()


def _volume(hu: np.ndarray) -> CtVolume:
    return CtVolume(hu=hu, affine_lps=np.eye(4), spacing_mm=(1.0, 1.0, 1.0), source=None,  # type: ignore[arg-type]
                    sop_instance_uids=[], frame_numbers=[])  # fmt: skip


async def _fail_inside(store: ReportStore, rid: str, volume: CtVolume) -> None:
    async with slices.hu_written(store, rid, volume):
        raise RuntimeError("the model failed")


def test_the_hu_file_is_written_and_taken_back_on_failure(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    volume = _volume(np.zeros((2, 3, 4), dtype=np.int16))
    kept, failed = str(uuid.uuid4()), str(uuid.uuid4())

    async def written() -> None:
        async with slices.hu_written(store, kept, volume):
            pass

    asyncio.run(written())
    assert store.file(kept, slices.HU_FILE).read_bytes() == slices.hu_npy(volume.hu)
    with pytest.raises(RuntimeError):
        asyncio.run(_fail_inside(store, failed, volume))
    with pytest.raises(NotFound):
        store.file(failed, slices.HU_FILE)
    assert list((tmp_path / failed).iterdir()) == []  # no partial copy left either
    # a report saved before (the same series sent again) keeps its file
    with pytest.raises(RuntimeError):
        asyncio.run(_fail_inside(store, kept, volume))
    assert store.file(kept, slices.HU_FILE).read_bytes() == slices.hu_npy(volume.hu)


def test_a_failure_beside_a_success_on_the_same_series_keeps_its_file(tmp_path: Path) -> None:
    """Two analyses of one series at once (one report id): one fails while the other
    has put its file in place; the file stays."""
    store, rid = ReportStore(tmp_path), str(uuid.uuid4())
    volume = _volume(np.ones((2, 3, 4), dtype=np.int16))

    async def both() -> None:
        async with slices.hu_written(store, rid, volume):
            async with slices.hu_written(store, rid, volume):
                pass  # the other analysis ends well first
            raise RuntimeError("this one's model failed")

    with pytest.raises(RuntimeError):
        asyncio.run(both())
    assert store.file(rid, slices.HU_FILE).read_bytes() == slices.hu_npy(volume.hu)
    assert [p.name for p in (tmp_path / rid).iterdir()] == [slices.HU_FILE]


def test_unsigned_words_add_modulo_to_the_exact_sum(small_blobs: list[bytes]) -> None:
    """Unsigned 16-bit values past int16 with an intercept that brings them back
    (-32768): the int16 sum wraps to the exact HU, the extremes included."""
    ds = read_dicom(small_blobs[0])
    words = np.random.default_rng(4).integers(0, 1 << 16, ds.Rows * ds.Columns).astype("<u2")
    words[:4] = [0, 32767, 32768, 65535]
    edit = {"PixelRepresentation": 0, "BitsStored": 16, "HighBit": 15,
            "RescaleIntercept": -32768, "PixelData": words.tobytes()}  # fmt: skip
    blobs = _rewritten(small_blobs, edit)
    volume = assemble_bytes(blobs)
    assert volume.hu.dtype == np.int16
    assert np.array_equal(volume.hu, _float32_hu(blobs, volume.sop_instance_uids))
    assert volume.hu.min() == -32768 and volume.hu.max() == 32767
