"""The HTTP service end to end, in-process, with the real demo model and real files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aidx.inference.settings import Role
from aidx.service.app import create_app
from tests.conftest import auth, dicom_bytes, make_settings

DICOM = {"Content-Type": "application/dicom"}
PNEUMONIA = "233604007"


def post_cxr(client: TestClient, data: bytes, role: Role = Role.radiologist, **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/cxr", content=data, headers={**DICOM, **auth(role), **headers})


def test_health_and_metrics_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = client.get("/metrics").text
    assert "aidx_queue_depth" in metrics and "aidx_batch_size_bucket" in metrics
    assert "process_cpu_seconds_total" in metrics  # replicas are sized by it


def test_v1_routes_need_a_valid_key_and_the_right_role(client: TestClient) -> None:
    missing = client.get("/v1/models")
    assert missing.status_code == 401 and missing.json()["code"] == "missing_api_key"
    wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_api_key"
    forbidden = post_cxr(client, dicom_bytes("RG1_UNCR.dcm"), role=Role.lab)
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "role_not_allowed"


def test_models_lists_the_demo_model_with_checksum_and_device(client: TestClient) -> None:
    (model,) = [
        m
        for m in client.get("/v1/models", headers=auth(Role.engineer)).json()
        if m["name"] == "cxr_pneumonia"
    ]
    assert model["state"] == "ready" and model["checksum_ok"] is True
    assert model["device"] == "cpu" and model["provider"] == "CPUExecutionProvider"
    assert model["demo_weights"] is True


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"])
def test_real_chest_radiographs_get_a_report(client: TestClient, name: str) -> None:
    response = post_cxr(client, dicom_bytes(name))
    assert response.status_code == 200, response.text
    report = response.json()
    pneumonia = next(f for f in report["findings"] if f["concept"]["code"] == PNEUMONIA)
    assert pneumonia["concept"]["scheme"] == "SCT"
    assert 0.0 <= pneumonia["probability"] <= 1.0
    assert pneumonia["present"] == (pneumonia["probability"] >= pneumonia["threshold"])
    assert report["model"]["name"] == "cxr_pneumonia" and len(report["model"]["sha256"]) == 64
    assert (
        report["source"]["sop_instance_uid"]
        == pydicom.dcmread(io.BytesIO(dicom_bytes(name))).SOPInstanceUID
    )
    assert set(report["timings"]) >= {"decode_ms", "preprocess_ms", "queue_ms", "compute_ms"}
    assert "not for clinical use" in report["disclaimer"]
    for finding in report["findings"]:
        for region in finding["regions"]:  # inside the original 1841 x 1955 image
            assert 0 <= region["x_min_px"] < region["x_max_px"] <= 1841
            assert 0 <= region["y_min_px"] < region["y_max_px"] <= 1955


@pytest.mark.parametrize(
    "lossless, reference", [("RG1_J2KR.dcm", "RG1_UNCR.dcm"), ("RG1_J2KI.dcm", "RG1_UNCI.dcm")]
)
def test_lossless_variants_give_the_same_probabilities(
    client: TestClient, lossless: str, reference: str
) -> None:
    a = post_cxr(client, dicom_bytes(lossless)).json()["findings"]
    b = post_cxr(client, dicom_bytes(reference)).json()["findings"]
    for fa, fb in zip(a, b, strict=True):
        assert abs(fa["probability"] - fb["probability"]) <= 1e-4


def test_the_overlay_and_the_report_can_be_fetched_and_each_read_is_audited(
    client: TestClient, var_dir: Path
) -> None:
    report = post_cxr(client, dicom_bytes("RG1_UNCR.dcm")).json()
    (overlay,) = [e for e in report["evidence"] if e["kind"] == "overlay"]
    png = client.get(overlay["url"], headers=auth(Role.radiologist))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.mode == "RGB" and abs(image.width / image.height - 1841 / 1955) < 0.01
    again = client.get(f"/v1/reports/{report['id']}", headers=auth(Role.radiologist))
    assert again.json()["findings"] == report["findings"]
    assert client.get(overlay["url"]).status_code == 401
    lines = [json.loads(x) for x in (var_dir / "audit.log").read_text().splitlines()]
    reads = [x for x in lines if x["resource"] == f"report/{report['id']}"]
    assert {x["action"] for x in reads} >= {"report.create", "report.read", "report.overlay"}
    patient_name = str(pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm"))).PatientName)
    assert patient_name and patient_name not in (var_dir / "audit.log").read_text()


def test_unknown_report_is_404_with_a_code(client: TestClient) -> None:
    response = client.get(
        "/v1/reports/00000000-0000-0000-0000-000000000000", headers=auth(Role.radiologist)
    )
    assert response.status_code == 404 and response.json()["code"] == "report_not_found"
    for rid in ("..%2F..%2Fetc%2Fpasswd", "not-a-uuid"):
        response = client.get(f"/v1/reports/{rid}", headers=auth(Role.radiologist))
        assert response.status_code == 404 and response.json()["code"] in (
            "not_found",
            "report_not_found",
        )


@pytest.mark.parametrize(
    "body, content_type, status, code",
    [
        ("CT_small.dcm", "application/dicom", 422, "unsupported_modality"),
        ("RG3_UNCR.dcm", "application/dicom", 422, "unsupported_body_part"),
        ("truncated", "application/dicom", 400, None),
        ("not-dicom", "application/dicom", 400, "not_dicom"),
        ("png", "image/png", 415, "unsupported_media_type"),
    ],
)
def test_bad_input_gets_a_clear_error(
    client: TestClient, body: str, content_type: str, status: int, code: str | None
) -> None:
    data = {
        "truncated": dicom_bytes("RG1_J2KR.dcm")[:200_000],
        "not-dicom": b"hello, not a DICOM file" * 10,
        "png": _png_bytes(),
    }.get(body) or dicom_bytes(body)
    response = client.post(
        "/v1/cxr", content=data, headers={"Content-Type": content_type, **auth(Role.radiologist)}
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"code", "message"} and payload["message"]
    if code:
        assert payload["code"] == code
    assert "Traceback" not in response.text


def test_a_non_image_dicom_object_is_refused_as_unprocessable(client: TestClient) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")))
    del ds.PixelData
    ds.SOPClassUID = pydicom.uid.BasicTextSRStorage
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = post_cxr(client, buffer.getvalue())
    assert response.status_code == 422 and response.json()["code"] == "no_pixel_data"


def test_a_small_image_is_refused(client: TestClient) -> None:
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")))
    small = ds.pixel_array[:200, :200].copy()
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = post_cxr(client, buffer.getvalue())
    assert response.status_code == 422 and response.json()["code"] == "image_too_small"


def test_an_oversized_body_is_413(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, max_upload_bytes=1_000_000, warmup=False))
    with TestClient(app) as small_limit:
        response = post_cxr(small_limit, dicom_bytes("RG1_UNCR.dcm"))
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_invalid_priority_header_is_400(client: TestClient) -> None:
    response = post_cxr(client, dicom_bytes("RG1_UNCR.dcm"), **{"X-Aidx-Priority": "urgent"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_priority"


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (300, 300), 128).save(buffer, format="PNG")
    return buffer.getvalue()
