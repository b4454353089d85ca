"""The synthetic chest phantoms: geometry, ground truth, determinism, DICOM files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_voi_lut

from aidx.pipelines.cxr import synthetic, synthetic_dicom
from aidx.pipelines.cxr.preprocess import to_model_input

SIZES = [(512, 512), (256, 320), (1024, 800), (300, 256)]


def draw(seed: int, *, size_px=(512, 512), pneumonia=True, cardiomegaly=False):
    rng = np.random.default_rng(seed)
    return synthetic.generate(rng, size_px=size_px, pneumonia=pneumonia, cardiomegaly=cardiomegaly)


@pytest.mark.parametrize("size_px", SIZES)
@pytest.mark.parametrize("pneumonia", [False, True])
def test_shapes_ranges_and_labels(size_px: tuple[int, int], pneumonia: bool) -> None:
    sample = draw(7, size_px=size_px, pneumonia=pneumonia)
    assert sample.image01.shape == size_px and sample.image01.dtype == np.float32
    assert sample.pneumonia_mask.shape == size_px and sample.pneumonia_mask.dtype == bool
    assert sample.lung_mask.shape == size_px and sample.lung_mask.dtype == bool
    assert sample.image01.min() >= 0.0 and sample.image01.max() <= 1.0
    assert sample.image01.std() > 0.1  # an image, not a flat field
    assert sample.pneumonia_mask.any() == pneumonia
    assert sample.labels == {"Pneumonia": pneumonia, "Cardiomegaly": False}
    assert sample.pixel_spacing_mm[0] == sample.pixel_spacing_mm[1] > 0
    image, geometry = to_model_input(sample.image01)
    assert image.shape == (1, 224, 224) and geometry.side_px == min(size_px)


def test_two_lungs_darker_than_mediastinum() -> None:
    for seed in range(5):
        sample = draw(seed, pneumonia=False)
        image, lungs = sample.image01, sample.lung_mask
        cols = np.arange(image.shape[1])
        left, right = lungs[:, cols < 256].sum(), lungs[:, cols >= 256].sum()
        assert left > 0.05 * lungs.size / 2 and right > 0.05 * lungs.size / 2
        mediastinum = image[200:320, 246:266].mean()
        assert image[lungs].mean() < mediastinum - 0.1


@pytest.mark.parametrize("seed", range(8))
def test_consolidation_inside_lungs_and_denser(seed: int) -> None:
    sample = draw(seed, size_px=(640, 512))
    mask, lungs = sample.pneumonia_mask, sample.lung_mask
    assert mask.any()
    assert not (mask & ~lungs).any(), "the lesion mask must lie inside the lung fields"
    assert mask.sum() < 0.6 * lungs.sum()
    assert sample.image01[mask].mean() > sample.image01[lungs & ~mask].mean()


def test_cardiothoracic_ratio_follows_label() -> None:
    normal = [draw(s, pneumonia=False).cardiothoracic_ratio for s in range(10)]
    enlarged = [draw(s, pneumonia=False, cardiomegaly=True).cardiothoracic_ratio for s in range(10)]
    assert all(0.38 <= r <= 0.5 for r in normal)
    assert all(0.56 <= r <= 0.68 for r in enlarged)
    assert draw(3, pneumonia=False, cardiomegaly=True).labels["Cardiomegaly"] is True


def test_heart_is_wider_with_cardiomegaly() -> None:
    """The drawn heart, not only the label, is bigger: fewer lung pixels next to it."""
    widths = {}
    for cardiomegaly in (False, True):
        sample = draw(11, pneumonia=False, cardiomegaly=cardiomegaly)
        # at the heart's level the gap between the two lungs is the heart
        row = sample.lung_mask[int(512 * 0.62)]
        gap = np.flatnonzero(~row[128:384]).size
        widths[cardiomegaly] = gap
    assert widths[True] > widths[False] * 1.1


def test_deterministic_for_a_seed() -> None:
    a, b = draw(42, size_px=(400, 300)), draw(42, size_px=(400, 300))
    np.testing.assert_array_equal(a.image01, b.image01)
    np.testing.assert_array_equal(a.pneumonia_mask, b.pneumonia_mask)
    assert a.cardiothoracic_ratio == b.cardiothoracic_ratio
    c = draw(43, size_px=(400, 300))
    assert not np.array_equal(a.image01, c.image01)


def test_sizes_vary_within_bounds() -> None:
    rng = np.random.default_rng(0)
    sizes = [synthetic.sample_size_px(rng) for _ in range(200)]
    assert all(256 <= min(s) <= 1024 and max(s) <= 1.3 * 1024 + 1 for s in sizes)
    assert any(r > c for r, c in sizes) and any(r < c for r, c in sizes)
    assert any(r == c for r, c in sizes)


def test_rejects_tiny_images() -> None:
    with pytest.raises(ValueError, match="at least"):
        draw(0, size_px=(32, 512))


# --- DICOM ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> synthetic.SyntheticCxr:
    return draw(5, size_px=(600, 500), cardiomegaly=True)


def test_dicom_monochrome2_round_trip(sample: synthetic.SyntheticCxr, tmp_path: Path) -> None:
    path = tmp_path / "cxr.dcm"
    written = synthetic_dicom.write_dicom(sample, path)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == synthetic_dicom.CR_IMAGE_STORAGE == "1.2.840.10008.5.1.4.1.1.1"
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == written.SOPInstanceUID
    assert (ds.Modality, ds.BodyPartExamined, ds.ViewPosition) == ("CR", "CHEST", "PA")
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
    assert (ds.Rows, ds.Columns) == (600, 500)
    assert ds.PatientID.startswith("SYN") and str(ds.PatientName) == "SYNTHETIC^PHANTOM"
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx(sample.pixel_spacing_mm, abs=1e-4)
    pixels = ds.pixel_array
    np.testing.assert_array_equal(pixels, np.rint(sample.image01.astype(np.float64) * 4095))
    assert 0 < float(ds.WindowWidth) <= 4096 and 0 < float(ds.WindowCenter) < 4095
    shown = apply_voi_lut(pixels, ds)
    assert np.corrcoef(shown.ravel(), sample.image01.ravel())[0, 1] > 0.99


def test_dicom_monochrome1_inverts(sample: synthetic.SyntheticCxr, tmp_path: Path) -> None:
    path = tmp_path / "cxr_m1.dcm"
    synthetic_dicom.write_dicom(
        sample, path, photometric="MONOCHROME1", bits_stored=10, window=False, patient_id="P-1"
    )
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert ds.BitsStored == 10 and ds.PatientID == "P-1"
    assert "WindowCenter" not in ds and "WindowWidth" not in ds
    expected = 1023 - np.rint(sample.image01.astype(np.float64) * 1023)
    np.testing.assert_array_equal(ds.pixel_array, expected)
    # dense (bright in MONOCHROME2) is stored low: the mediastinum is below the lungs
    assert ds.pixel_array[sample.lung_mask].mean() > ds.pixel_array[250:350, 240:260].mean()


def test_dicom_uids_are_fresh_unless_given(sample: synthetic.SyntheticCxr, tmp_path: Path) -> None:
    a = synthetic_dicom.write_dicom(sample, tmp_path / "a.dcm")
    b = synthetic_dicom.write_dicom(
        sample, tmp_path / "b.dcm", study_instance_uid=a.StudyInstanceUID
    )
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.SeriesInstanceUID != b.SeriesInstanceUID
    assert b.StudyInstanceUID == a.StudyInstanceUID
    for uid in (a.SOPInstanceUID, a.StudyInstanceUID, a.SeriesInstanceUID):
        assert pydicom.uid.UID(uid).is_valid


def test_dicom_rejects_bad_arguments(sample: synthetic.SyntheticCxr, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="photometric"):
        synthetic_dicom.write_dicom(sample, tmp_path / "x.dcm", photometric="RGB")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bits_stored"):
        synthetic_dicom.write_dicom(sample, tmp_path / "x.dcm", bits_stored=17)
