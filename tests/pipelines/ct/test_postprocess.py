"""Lungs, lesions, measurements and the label map against a phantom's ground truth,
through the real DICOM round trip (write with pydicom, assemble, preprocess)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aidx.pipelines.ct import evidence, postprocess, synthetic
from aidx.pipelines.ct.pipeline import lesion_entries
from aidx.pipelines.ct.preprocess import ModelGrid, model_geometry, to_model_grid
from aidx.pipelines.ct.series import CtVolume, assemble_bytes

SPACING = (2.5, 2.5, 4.0)  # column, row, slice (mm): not the model's 3 mm
SHAPE = (85, 120, 160)  # slices, rows, columns: 340 x 300 x 400 mm


@pytest.fixture(scope="module")
def phantom() -> synthetic.Phantom:
    rng = np.random.default_rng(11)
    return synthetic.generate(rng, shape_kji=SHAPE, spacing_mm=SPACING, n_lesions=3)


@pytest.fixture(scope="module")
def volume(phantom: synthetic.Phantom, tmp_path_factory: pytest.TempPathFactory) -> CtVolume:
    files = synthetic.write_series(phantom, tmp_path_factory.mktemp("truth"))
    return assemble_bytes([f.read_bytes() for f in reversed(files)])


@pytest.fixture(scope="module")
def grid(volume: CtVolume, phantom: synthetic.Phantom) -> ModelGrid:
    return to_model_grid(volume.hu, volume.affine_lps, 3.0, phantom.lesions)


def test_phantom_has_lesions(phantom: synthetic.Phantom) -> None:
    assert len(phantom.truth) >= 2
    assert all(-700 <= t.hu <= 0 for t in phantom.truth)


def test_model_grid_is_ras_at_model_spacing(grid: ModelGrid, volume: CtVolume) -> None:
    assert grid.spacing_mm == pytest.approx(3.0)
    assert grid.affine_ras[0, 0] > 0 and grid.affine_ras[1, 1] > 0 and grid.affine_ras[2, 2] > 0
    assert grid.image.shape[0] == 1 and grid.image.min() >= 0.0 and grid.image.max() <= 1.0
    centre_kji = (np.array(volume.shape) - 1) / 2
    centre_lps = volume.voxel_to_lps(centre_kji[::-1])[0]
    # The grid is MONAI's whole-series grid cropped to the body: its centre is the
    # series' centre, and the crop lies on it at a whole-voxel offset.
    full_affine, full_shape, _ = model_geometry(volume.hu.shape, volume.affine_lps, 3.0)
    full = ModelGrid(grid.image, grid.hu, full_affine, None)
    xyz = (np.array(full_shape) - 1) / 2
    np.testing.assert_allclose(full.to_lps(xyz)[0], centre_lps, atol=3.0)
    offset = np.linalg.solve(full_affine, grid.affine_ras)
    np.testing.assert_allclose(offset[:3, :3], np.eye(3), atol=1e-9)
    np.testing.assert_allclose(offset[:3, 3], np.rint(offset[:3, 3]), atol=1e-6)
    assert all(n <= f for n, f in zip(grid.hu.shape, full_shape, strict=True))


def test_lungs_from_hu(grid: ModelGrid, phantom: synthetic.Phantom) -> None:
    lungs = postprocess.lung_mask(grid.hu, grid.voxel_ml)
    truth_ml = phantom.lung.sum() * np.prod(SPACING) / 1000
    measured = lungs.volume_ml("right", grid.voxel_ml) + lungs.volume_ml("left", grid.voxel_ml)
    assert measured == pytest.approx(truth_ml, rel=0.12)
    # RAS: the right lung has the larger X indices.
    rx = np.argwhere(lungs.side == 1)[:, 0].mean()
    lx = np.argwhere(lungs.side == 2)[:, 0].mean()
    assert rx > lx
    assert set(lungs.z_extent) == {"right", "left"}


def test_lesion_measurements_match_ground_truth(
    grid: ModelGrid, volume: CtVolume, phantom: synthetic.Phantom
) -> None:
    """The ground-truth mask as a perfect probability map: volume within 15 %,
    centroid within 5 mm, side, bounding boxes, mean HU."""
    assert grid.label is not None
    lungs = postprocess.lung_mask(grid.hu, grid.voxel_ml)
    probability = (grid.label > 0).astype(np.float32)
    labels, measures = postprocess.lesions(
        grid, probability, lungs, threshold=0.5, min_volume_ml=0.5
    )
    entries = lesion_entries(volume, grid, measures)
    big = [t for t in phantom.truth if t.volume_ml >= 2.0]
    assert big
    for truth in big:
        nearest = min(entries, key=lambda e: np.linalg.norm(
            np.subtract(e.centroid_lps_mm, truth.centroid_lps_mm)))  # fmt: skip
        assert np.linalg.norm(np.subtract(nearest.centroid_lps_mm, truth.centroid_lps_mm)) < 5.0
        assert nearest.volume_ml == pytest.approx(truth.volume_ml, rel=0.15)
        assert nearest.side == truth.side
        assert nearest.zone in postprocess.ZONES
        lo, hi = np.array(nearest.bbox_lps.min_mm), np.array(nearest.bbox_lps.max_mm)
        assert np.all(lo <= truth.centroid_lps_mm) and np.all(truth.centroid_lps_mm <= hi)
        ijk = np.linalg.inv(volume.affine_lps) @ [*truth.centroid_lps_mm, 1.0]
        assert np.all(np.array(nearest.bbox_voxel.min_ijk) <= ijk[:3] + 0.5)
        assert np.all(ijk[:3] - 0.5 <= np.array(nearest.bbox_voxel.max_ijk))
        assert truth.hu - 150 < nearest.mean_hu < truth.hu + 150
        assert nearest.max_probability == 1.0
    parts = postprocess.involvement(labels, lungs, grid.voxel_ml)
    assert all(0.0 <= p.percent <= 100.0 for p in parts.values())
    for side in ("right", "left"):
        truth_ml = sum(t.volume_ml for t in phantom.truth if t.side == side)
        assert parts[side].involved_ml == pytest.approx(truth_ml, rel=0.15, abs=0.5)


def test_label_map_on_the_series_grid(
    grid: ModelGrid, volume: CtVolume, phantom: synthetic.Phantom
) -> None:
    assert grid.label is not None
    back = evidence.label_map_on_series((grid.label > 0).astype(np.uint16), volume, grid)
    assert back.shape == volume.shape and back.dtype == np.uint8
    truth = phantom.lesions > 0
    dice = 2 * np.count_nonzero(back.astype(bool) & truth) / (back.astype(bool).sum() + truth.sum())
    assert dice > 0.8


def test_key_slice_png(volume: CtVolume, grid: ModelGrid, tmp_path: Path) -> None:
    assert grid.label is not None
    labels = evidence.label_map_on_series(grid.label, volume, grid)
    k = int(np.argmax((labels == 1).sum(axis=(1, 2))))
    png = evidence.key_slice_png(volume, labels, k, 1)
    assert png.startswith(b"\x89PNG")
    from PIL import Image

    (tmp_path / "k.png").write_bytes(png)
    image = Image.open(tmp_path / "k.png")
    assert image.size == (volume.shape[2], volume.shape[1])


def test_zones() -> None:
    assert postprocess.zone_of(99, (0, 100)) == "upper"
    assert postprocess.zone_of(50, (0, 100)) == "middle"
    assert postprocess.zone_of(1, (0, 100)) == "lower"


def test_no_lesions_below_threshold(grid: ModelGrid) -> None:
    lungs = postprocess.lung_mask(grid.hu, grid.voxel_ml)
    labels, measures = postprocess.lesions(
        grid, np.zeros(grid.hu.shape, np.float32), lungs, threshold=0.5, min_volume_ml=0.5
    )
    assert measures == [] and not labels.any()
