"""The issue 16 CT paths against the code they replaced (legacy.py) on a phantom
through the real DICOM round trip: the resampler is MONAI's resampling when its
anti-aliasing is off; lungs, lesion labels, measures and the series label map are
the same as before; the anti-aliasing changes HU only where the series is finer
than the model, and the lung volumes stay within 1 %."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import convex_hull_image

from aidx.pipelines.ct import evidence, postprocess, resample, synthetic
from aidx.pipelines.ct.preprocess import ModelGrid, model_geometry, to_model_grid
from aidx.pipelines.ct.series import CtVolume, assemble_bytes
from tests.pipelines.ct import legacy

SPACING = (2.5, 2.5, 4.0)
SHAPE = (85, 120, 160)
FINE_SPACING = (0.9, 1.0, 5.0)  # finer than the model's 3 mm in-plane: anti-aliased
FINE_SHAPE = (60, 300, 384)


@pytest.fixture(scope="module")
def phantom() -> synthetic.Phantom:
    return synthetic.generate(np.random.default_rng(11), SHAPE, SPACING, n_lesions=3)


@pytest.fixture(scope="module")
def volume(phantom: synthetic.Phantom, tmp_path_factory: pytest.TempPathFactory) -> CtVolume:
    files = synthetic.write_series(phantom, tmp_path_factory.mktemp("fast"))
    return assemble_bytes([f.read_bytes() for f in files])


@pytest.fixture(scope="module")
def grid(volume: CtVolume, phantom: synthetic.Phantom) -> ModelGrid:
    return to_model_grid(volume.hu, volume.affine_lps, 3.0, phantom.lesions)


@pytest.mark.parametrize("flip_columns", [False, True])
@pytest.mark.parametrize(("shape", "spacing"), [(SHAPE, SPACING), (FINE_SHAPE, FINE_SPACING)])
def test_without_anti_aliasing_the_resampler_is_monai(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], flip_columns: bool
) -> None:
    phantom = synthetic.generate(np.random.default_rng(5), shape, spacing, n_lesions=1)
    hu, affine = np.rint(phantom.hu), phantom.affine_lps.copy()
    if flip_columns:
        affine[:3, 0] *= -1
    expected, expected_affine = legacy.monai_hu(hu, affine, 3.0)
    model_affine, grid_shape, model_to_ijk = model_geometry(hu.shape, affine, 3.0)
    whole = tuple(slice(0, n) for n in grid_shape)
    ours = resample.resample(hu, resample.axis_maps(model_to_ijk), whole, anti_alias=False)  # type: ignore[arg-type]
    np.testing.assert_allclose(model_affine, expected_affine, atol=1e-9)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=0.2)  # HU; float32 rounding only


def test_anti_aliasing_where_the_series_is_finer() -> None:
    phantom = synthetic.generate(np.random.default_rng(5), FINE_SHAPE, FINE_SPACING, n_lesions=1)
    expected, _ = legacy.monai_hu(phantom.hu, phantom.affine_lps, 3.0)
    grid = to_model_grid(phantom.hu, phantom.affine_lps, 3.0)
    _, _, model_to_ijk = model_geometry(phantom.hu.shape, phantom.affine_lps, 3.0)
    start = np.rint(np.linalg.solve(model_geometry(phantom.hu.shape, phantom.affine_lps, 3.0)[0],
                                    grid.affine_ras)[:3, 3]).astype(int)  # fmt: skip
    same = expected[tuple(slice(s, s + n) for s, n in zip(start, grid.hu.shape, strict=True))]
    sigmas = [m.sigma for m in resample.axis_maps(model_to_ijk)]
    assert sigmas[0] > 0.5 and sigmas[1] > 0.5 and sigmas[2] == 0  # 0.9/1.0 mm in-plane, 5 mm
    # the noise (10-30 HU per voxel) is averaged, not aliased: neighbours differ less
    lungs_old = postprocess.lung_mask(same, grid.voxel_ml)
    lungs_new = postprocess.lung_mask(grid.hu, grid.voxel_ml)
    inside = lungs_old.side > 0
    assert np.std(np.diff(grid.hu, axis=0)[inside[1:]]) < np.std(np.diff(same, axis=0)[inside[1:]])
    for side in ("right", "left"):
        old_ml = lungs_old.volume_ml(side, grid.voxel_ml)
        assert lungs_new.volume_ml(side, grid.voxel_ml) == pytest.approx(old_ml, rel=0.01)


def test_lungs_are_the_per_slice_loops(grid: ModelGrid) -> None:
    lungs = postprocess.lung_mask(grid.hu, grid.voxel_ml)
    labels, _ = ndimage.label(grid.hu < postprocess.LUNG_AIR_HU)
    air = lungs.side > 0  # the kept air, holes filled; rebuild the kept air itself:
    kept = np.isin(labels, np.unique(labels[air & (grid.hu < postprocess.LUNG_AIR_HU)]))
    region, side, mid, extent = legacy.lungs_from(kept & (labels > 0))
    np.testing.assert_array_equal(lungs.region, region)
    np.testing.assert_array_equal(lungs.side, side)
    assert (lungs.mid_x, lungs.z_extent) == (mid, extent)


def test_hull_image_is_skimage_on_random_shapes() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        plane = ndimage.binary_opening(rng.random((60, 50)) < rng.uniform(0.05, 0.6))
        plane |= rng.random(plane.shape) < 0.01  # isolated pixels too
        if plane.sum() < 4:
            continue
        np.testing.assert_array_equal(postprocess.hull_image(plane), convex_hull_image(plane))


def test_lesions_and_measures_are_the_loops(grid: ModelGrid) -> None:
    assert grid.label is not None
    lungs = postprocess.lung_mask(grid.hu, grid.voxel_ml)
    probability = (grid.label > 0).astype(np.float32)
    labels, measures = postprocess.lesions(
        grid, probability, lungs, threshold=0.5, min_volume_ml=0.5
    )
    expected = legacy.lesion_measures(grid, labels)
    assert [m.label for m in measures] == [e["label"] for e in expected]
    for m, e in zip(measures, expected, strict=True):
        assert m.volume_ml == e["volume_ml"] and m.bbox_xyz == e["bbox_xyz"]
        assert m.centroid_xyz == e["centroid_xyz"]
        # float64 sums now, float32 pairwise before
        assert m.mean_hu == pytest.approx(e["mean_hu"], abs=1e-3)


def test_label_map_on_the_series_is_affine_transform(grid: ModelGrid, volume: CtVolume) -> None:
    rng = np.random.default_rng(2)
    assert grid.label is not None
    blobs = ndimage.label(rng.random(grid.hu.shape) < 0.02)[0].astype(np.uint16)
    for labels in (grid.label.astype(np.uint16), blobs, np.zeros_like(blobs)):
        np.testing.assert_array_equal(
            evidence.label_map_on_series(labels, volume, grid),
            legacy.label_map_on_series(labels, volume, grid),
        )


def test_label_map_npz_holds_the_same_arrays(grid: ModelGrid, volume: CtVolume) -> None:
    assert grid.label is not None
    labels = evidence.label_map_on_series(grid.label, volume, grid)
    stored = np.load(io.BytesIO(evidence.label_map_npz(labels, volume, [{"label": 1}])))
    np.testing.assert_array_equal(stored["labels"], labels)
    np.testing.assert_array_equal(stored["affine_lps"], volume.affine_lps)
    assert list(stored["sop_instance_uids"]) == volume.sop_instance_uids
    assert str(stored["segments"]) == '[{"label": 1}]'


def test_the_grid_is_cropped_to_the_body(grid: ModelGrid, volume: CtVolume, tmp_path: Path) -> None:
    _, full_shape, _ = model_geometry(volume.hu.shape, volume.affine_lps, 3.0)
    assert np.prod(grid.hu.shape) < np.prod(full_shape)
    # outside air still touches the in-plane edges (what lung_mask relies on)
    for edge in (grid.hu[0], grid.hu[-1], grid.hu[:, 0], grid.hu[:, -1]):
        assert (edge < postprocess.LUNG_AIR_HU).mean() > 0.5
