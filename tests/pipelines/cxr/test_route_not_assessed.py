"""POST /v1/cxr under the default OOD policy, in-process with the real demo model and
its committed gate: what cannot be judged comes back not assessed (every finding,
no probability, no regions, an overlay without heat); in-distribution phantoms are
scored exactly as the model scores them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.pipelines.cxr.decode import decode_radiograph
from aidx.pipelines.cxr.evidence import OVERLAY_INPUTS_FILE
from aidx.pipelines.cxr.postprocess import sigmoid
from aidx.pipelines.cxr.preprocess import to_model_input
from aidx.service.app import create_app
from tests.conftest import MODELS, auth, dicom_bytes, make_settings
from tests.pipelines.cxr.dicom_copies import drawn_cr, edited, phantom_cr

HEADERS = {**auth(Role.radiologist), "Content-Type": "application/dicom"}


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cxr-not-assessed")


@pytest.fixture(scope="module")
def api(var: Path) -> Iterator[TestClient]:
    settings = make_settings(
        var, enabled_models=["cxr_pneumonia"], ood_policy="not_assessed", writeback=False
    )
    with TestClient(create_app(settings)) as client:
        yield client


def post(api: TestClient, data: bytes) -> dict:  # type: ignore[type-arg]
    response = api.post("/v1/cxr", content=data, headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_not_assessed(report: dict, reason: str, var: Path) -> None:  # type: ignore[type-arg]
    assert report["not_assessed"]["reason"] == reason
    assert len(report["findings"]) == 2
    for finding in report["findings"]:
        assert finding["assessed"] is False and finding["not_assessed_reason"] == reason
        assert finding["probability"] is None and finding["present"] is None
        assert finding["regions"] == [] and finding["not_assessed_message"]
    assert report["timings"]["compute_ms"] == 0 and report["timings"]["batch_size"] == 0
    with np.load(var / "reports" / report["id"] / OVERLAY_INPUTS_FILE) as npz:
        assert "cam" not in npz.files and float(npz["probability"]) == 0.0  # no heat
        assert npz["boxes_px"].size == 0


def test_the_real_chest_cr_is_out_of_distribution_and_not_assessed(
    api: TestClient, var: Path
) -> None:
    report = post(api, dicom_bytes("RG1_UNCR.dcm"))
    assert_not_assessed(report, "out_of_distribution", var)
    ood = report["ood"]
    assert ood["status"] == "out_of_distribution" and ood["policy"] == "not_assessed"
    assert ood["score"] > ood["threshold"] and ood["method"]
    assert "not for clinical use" in report["disclaimer"]


@pytest.mark.parametrize(
    ("name", "changes", "reason"),
    [
        ("RG3_UNCR.dcm", {"BodyPartExamined": None}, "not_chest"),  # a lower leg
        ("RG1_UNCR.dcm", {"BodyPartExamined": None}, "not_chest"),
        ("RG1_UNCR.dcm", {"ViewPosition": "LL"}, "unsupported_view"),
    ],
)
def test_edited_real_radiographs_are_not_assessed(
    api: TestClient, var: Path, name: str, changes: dict[str, object], reason: str
) -> None:
    sop = f"1.2.826.0.1.3680043.8.498.{abs(hash((name, reason))) % 10**12}"
    report = post(api, edited(name, SOPInstanceUID=sop, **changes))
    assert_not_assessed(report, reason, var)


def test_a_flat_grey_image_is_blank(api: TestClient, var: Path, tmp_path: Path) -> None:
    report = post(api, drawn_cr(np.full((512, 512), 0.5), tmp_path, "flat"))
    assert_not_assessed(report, "blank_image", var)


def test_a_noise_image_is_out_of_distribution(api: TestClient, var: Path, tmp_path: Path) -> None:
    noise = np.random.default_rng(3).random((512, 640))
    assert_not_assessed(post(api, drawn_cr(noise, tmp_path, "noise")), "out_of_distribution", var)


def test_what_the_route_does_not_take_is_still_refused(api: TestClient) -> None:
    response = api.post("/v1/cxr", content=dicom_bytes("RG3_UNCR.dcm"), headers=HEADERS)
    assert response.status_code == 422 and response.json()["code"] == "unsupported_body_part"
    response = api.post("/v1/cxr", content=dicom_bytes("693_UNCR.dcm"), headers=HEADERS)
    assert response.status_code == 422 and response.json()["code"] == "unsupported_modality"


def model_probabilities(data: bytes) -> np.ndarray:
    tensor, _ = to_model_input(decode_radiograph(data).image01)
    session = ort.InferenceSession(
        str(MODELS / "cxr_pneumonia" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(["logits"], {"image": tensor[None]})
    return sigmoid(logits[0].astype(np.float64))


@pytest.mark.parametrize("seed", [100, 101, 102, 103])
def test_in_distribution_phantoms_are_scored_as_the_model_scores_them(
    api: TestClient, tmp_path: Path, seed: int
) -> None:
    data = phantom_cr(seed, tmp_path, photometric="MONOCHROME1" if seed % 2 else "MONOCHROME2")
    report = post(api, data)
    assert report["not_assessed"] is None and report["ood"]["status"] == "in_distribution"
    assert report["warnings"] == []
    expected = model_probabilities(data)
    for finding, probability in zip(report["findings"], expected, strict=True):
        assert finding["assessed"] is True
        assert finding["probability"] == pytest.approx(probability, abs=1e-5)
        assert finding["present"] == (probability >= finding["threshold"])


def test_under_warn_the_real_chest_cr_is_scored_with_the_warning_first(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, enabled_models=["cxr_pneumonia"], ood_policy="warn", writeback=False
    )
    with TestClient(create_app(settings)) as client:
        report = post(client, dicom_bytes("RG1_UNCR.dcm"))
    assert report["not_assessed"] is None and report["ood"]["policy"] == "warn"
    assert report["ood"]["status"] == "out_of_distribution"
    assert report["warnings"][0].startswith("OUT OF DISTRIBUTION")
    assert all(f["assessed"] and f["probability"] is not None for f in report["findings"])


def test_the_policy_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from aidx.inference.assessment import OodPolicy
    from aidx.inference.settings import Settings

    monkeypatch.setenv("AIDX_OOD_POLICY", "warn")
    assert Settings(mode="development").ood_policy is OodPolicy.warn
    monkeypatch.delenv("AIDX_OOD_POLICY")
    assert Settings(mode="development").ood_policy is OodPolicy.not_assessed
