"""The CT outputs pinned on a small phantom through the real DICOM round trip, with a
fixed stand-in for the model (the phantom's lesions on the model grid, blurred): the
lesion list, the lungs, the saved HU and label-map arrays and the key-slice pixels
are those the code gave before the issue 16 decode and postprocess work (main at
8fd9075). And the fast paths that work shares against what they replaced: slices
read straight from PixelData against pydicom's pixel_array, the float32 HU, the
slice-by-slice int16 file against np.save, the per-box peak against ndimage.maximum."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRBigEndian, JPEG2000Lossless
from scipy import ndimage

from aidx.inference.dicom_input import read_dicom
from aidx.pipelines.ct import evidence, pipeline, postprocess, slices, synthetic
from aidx.pipelines.ct.preprocess import ModelGrid, to_model_grid
from aidx.pipelines.ct.series import assemble_bytes, native_pixels

SHAPE = (40, 96, 112)
SPACING = (3.2, 3.0, 6.0)

# (volume_ml, side, zone, centroid_lps_mm, mean_hu, max_probability, key_slice_k,
#  bbox min_ijk, bbox max_ijk), largest first
PINNED_LESIONS = [
    (60.642, "right", "middle", [-97.77, 19.29, -16.51], -433.0, 1.0, 17, [19, 43, 10],
     [32, 65, 21]),
    (18.279, "left", "lower", [67.42, 12.71, -39.62], -209.7, 1.0, 13, [72, 43, 8], [81, 58, 16]),
    (16.686, "left", "middle", [105.37, -11.21, -21.76], -634.9, 1.0, 16, [83, 38, 13],
     [94, 50, 18]),
    (7.668, "left", "upper", [89.1, 12.0, 42.17], -661.1, 0.9999, 27, [79, 47, 25], [88, 56, 28]),
]  # fmt: skip
PINNED_LUNGS = [("right", 3042.5, 60.642, 1.99), ("left", 2759.7, 42.633, 1.54)]
PINNED_LABEL_VOXELS = [428300, 1055, 314, 267, 144]  # series voxels per label, 0 first
PINNED_SHA256 = {
    "series_hu.npy": "ea7582b105fe7dd964e5653a3a794628a5bc0cc8673ceaeaa93331541bea8abb",
    "series_labels.npy": "c70947d1bbc7f038a80e8de36d3f39854bf1bc4ec8bb90b57e1b49d2e1d5fcc6",
}
PINNED_PNG_PIXELS_SHA256 = {
    "keyslice_1.png": "71d555faa5819cdb0d2d3d59af8e54427977e3f66eb836b58709cc8a20f706cd",
    "keyslice_2.png": "b11d86dc6f4658c0bfa56edf4774f141a052afde28e6bd55cf556196257164b4",
    "keyslice_3.png": "2cdd7f707af41f8ba4df50e4ff5bbb9bb7f14b595584d13fbe5ddff3905787ea",
}


@pytest.fixture(scope="module")
def phantom() -> synthetic.Phantom:
    return synthetic.generate(np.random.default_rng(4), SHAPE, SPACING, n_lesions=4)


@pytest.fixture(scope="module")
def blobs(phantom: synthetic.Phantom, tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return [f.read_bytes() for f in synthetic.write_series(phantom, tmp_path_factory.mktemp("p"))]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_outputs_are_those_before(phantom: synthetic.Phantom, blobs: list[bytes]) -> None:
    volume, _, _ = pipeline.decode(blobs)
    grid, _ = pipeline.preprocess(volume, 3.0)
    lungs, _ = pipeline.find_lungs(grid)
    truth = to_model_grid(volume.hu, volume.affine_lps, 3.0, phantom.lesions).label
    assert truth is not None
    probability = ndimage.gaussian_filter((truth > 0).astype(np.float32), 0.7)
    labels_xyz, measures = postprocess.lesions(
        grid, probability, lungs, threshold=0.5, min_volume_ml=0.5
    )
    lesions = pipeline.lesion_entries(volume, grid, measures)
    labels_kji = evidence.label_map_on_series(labels_xyz, volume, grid)
    _, files = pipeline.report_files(volume, labels_kji, lesions, "r")
    files[slices.HU_FILE] = slices.hu_npy(volume.hu)  # written apart, during the model run

    got = [
        (x.volume_ml, x.side, x.zone, x.centroid_lps_mm, x.mean_hu, x.max_probability,
         x.key_slice_k, x.bbox_voxel.min_ijk, x.bbox_voxel.max_ijk)
        for x in lesions
    ]  # fmt: skip
    assert got == PINNED_LESIONS
    rows = pipeline.lung_involvement(labels_xyz, lungs, grid.voxel_ml)
    lungs_got = [(r.side, r.lung_volume_ml, r.involved_ml, r.involvement_percent) for r in rows]
    assert lungs_got == PINNED_LUNGS
    assert np.bincount(labels_kji.ravel()).tolist() == PINNED_LABEL_VOXELS
    assert {name: _sha256(files[name]) for name in PINNED_SHA256} == PINNED_SHA256
    pixels = {name: _sha256(np.asarray(Image.open(io.BytesIO(files[name]))).tobytes())
              for name in PINNED_PNG_PIXELS_SHA256}  # fmt: skip
    assert pixels == PINNED_PNG_PIXELS_SHA256
    assert np.array_equal(evidence_labels(files["labelmap.npz"]), labels_kji)


def evidence_labels(npz: bytes) -> np.ndarray:
    with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
        return np.asarray(archive["labels"])


@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize("bits_stored", [16, 12, 10])
def test_native_slice_is_pydicoms_pixel_array(
    blobs: list[bytes], bits_stored: int, signed: int
) -> None:
    """Any 16-bit word, unused high bits set or not: the value pydicom gives."""
    ds = pydicom.dcmread(io.BytesIO(blobs[0]))
    words = np.random.default_rng(bits_stored + signed).integers(0, 1 << 16, ds.Rows * ds.Columns)
    ds.PixelData = words.astype("<u2").tobytes()
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, signed
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    parsed = read_dicom(buffer.getvalue())
    native = native_pixels(parsed)
    assert native is not None
    expected = parsed.pixel_array
    assert native.dtype == expected.dtype
    assert np.array_equal(native, expected)


@pytest.mark.parametrize(
    "change",
    [
        {"TransferSyntaxUID": ExplicitVRBigEndian},
        {"TransferSyntaxUID": JPEG2000Lossless},
        {"BitsAllocated": 8},
        {"SamplesPerPixel": 3},
        {"NumberOfFrames": 2},
        {"PixelData": b"\0\0"},
    ],
)
def test_anything_else_is_left_to_pydicom(blobs: list[bytes], change: dict[str, object]) -> None:
    ds = read_dicom(blobs[0])
    for name, value in change.items():
        setattr(ds.file_meta if name == "TransferSyntaxUID" else ds, name, value)
    assert native_pixels(ds) is None


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (0.7, -1000.5), (2.0, 0.0)])
def test_hu_as_before(blobs: list[bytes], slope: float, intercept: float) -> None:
    """Stored value x slope + intercept, rounded as before (a float64 product cast to
    float32, then a float32 sum), whichever path computes it."""
    datasets = [read_dicom(blob) for blob in blobs]
    for ds in datasets:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    volume = assemble_bytes(_rewritten(datasets))
    stored = {ds.SOPInstanceUID: ds.pixel_array for ds in datasets}
    before = np.empty(volume.hu.shape, dtype=np.float32)
    for k, uid in enumerate(volume.sop_instance_uids):
        np.multiply(stored[uid], slope, out=before[k], casting="unsafe")
        before[k] += intercept
    assert np.array_equal(volume.hu, before)


def _rewritten(datasets: list[pydicom.Dataset]) -> list[bytes]:
    out = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_int16_hu_file_is_np_save_of_the_rounded_clipped_volume(dtype: type) -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-3000, 5000, (5, 7, 9)).astype(dtype)
    hu[0, 0, :4] = [-0.5, 0.5, 1.5, 2.5]  # ties round to even
    buffer = io.BytesIO()
    np.save(buffer, np.clip(np.rint(hu), *slices.HU_RANGE).astype("<i2"), allow_pickle=False)
    assert slices.hu_npy(hu) == buffer.getvalue()


def test_peak_probability_is_ndimage_maximum() -> None:
    rng = np.random.default_rng(1)
    probability = rng.random((20, 18, 16)).astype(np.float32)
    labels, n = ndimage.label(probability > 0.8)
    grid_hu = np.zeros(probability.shape, dtype=np.float32)
    grid = to_model_grid_stub(grid_hu)
    lungs = postprocess.Lungs(np.ones(labels.shape, bool), np.zeros(labels.shape, np.int8), 9.0, {})
    measures = postprocess.measure(labels, n, grid, probability, lungs)
    expected = ndimage.maximum(probability, labels, np.arange(1, n + 1))
    assert [m.max_probability for m in measures] == [float(v) for v in expected]


def to_model_grid_stub(hu: np.ndarray) -> ModelGrid:
    return ModelGrid(image=hu[None], hu=hu, affine_ras=np.eye(4) * 3.0, label=None)
