"""The display chain on real and synthetic DICOM: LUTs, windowing, MONOCHROME1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aidx.inference.errors import BadRequest, Unprocessable
from aidx.pipelines.cxr import synthetic, synthetic_dicom
from aidx.pipelines.cxr.decode import decode_radiograph
from aidx.pipelines.cxr.preprocess import MODEL_SIZE_PX, to_model_input
from tests.conftest import dicom_bytes


def phantom(seed: int = 3) -> synthetic.SyntheticCxr:
    rng = np.random.default_rng(seed)
    return synthetic.generate(rng, size_px=(600, 500), pneumonia=True, cardiomegaly=False)


@pytest.mark.parametrize("window", [True, False])
def test_monochrome1_and_monochrome2_decode_to_the_same_display_image(
    tmp_path: Path, window: bool
) -> None:
    sample = phantom()
    images = []
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        path = tmp_path / f"{photometric}.dcm"
        synthetic_dicom.write_dicom(sample, path, photometric=photometric, window=window)  # type: ignore[arg-type]
        images.append(decode_radiograph(path.read_bytes()).image01)
    np.testing.assert_allclose(images[0], images[1], atol=1e-3)
    # and it is the phantom itself, up to the 12-bit quantisation and window
    assert np.corrcoef(images[1].ravel(), sample.image01.ravel())[0, 1] > 0.99


def test_the_real_radiograph_is_bright_where_dense() -> None:
    image = decode_radiograph(dicom_bytes("RG1_UNCR.dcm")).image01
    rows, cols = image.shape
    # the mediastinum (centre column band) is denser than the lateral lung fields
    centre = image[
        rows // 3 : 2 * rows // 3, cols // 2 - cols // 20 : cols // 2 + cols // 20
    ].mean()
    lungs = image[rows // 3 : 2 * rows // 3, cols // 5 : cols // 3].mean()
    assert centre > lungs


def test_the_model_tensor_follows_the_torchxrayvision_contract() -> None:
    tensor, geometry = to_model_input(decode_radiograph(dicom_bytes("RG1_UNCR.dcm")).image01)
    assert tensor.shape == (1, MODEL_SIZE_PX, MODEL_SIZE_PX) and tensor.dtype == np.float32
    assert -1024 <= tensor.min() < 0 < tensor.max() <= 1024
    assert geometry.side_px == 1841 and geometry.row0 == (1955 - 1841) // 2


def test_a_truncated_file_is_a_bad_request_not_a_crash() -> None:
    data = dicom_bytes("RG1_UNCR.dcm")
    for cut in (100, 1000, len(data) // 2):
        with pytest.raises(BadRequest):
            decode_radiograph(data[:cut])


def test_ct_is_refused_with_the_modality_code() -> None:
    with pytest.raises(Unprocessable) as caught:
        decode_radiograph(dicom_bytes("CT_small.dcm"))
    assert caught.value.code == "unsupported_modality"
