"""The workspace's image routes on real inputs: a real chest CR (pydicom-data) and a
synthetic chest CT written as real DICOM files, through the real app and demo models.
The full-resolution radiograph keeps the source's size and values; a CT slice comes
with its lesions outlined; both refuse other roles, answer coded errors and audit."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aidx.inference.settings import Role, Settings
from aidx.pipelines.ct import synthetic
from aidx.service.app import create_app

from ..conftest import auth, dicom_bytes, make_settings

CT_SHAPE = (24, 64, 80)  # slices, rows, columns
CT_SPACING = (5.0, 5.0, 10.0)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        tmp_path_factory.mktemp("viewer"),
        enabled_models=["cxr_pneumonia", "ct_pneumonia"],
        writeback=False,
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def cxr_id(client: TestClient) -> str:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    answer = client.post("/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def ct_files(folder: Path, seed: int = 7) -> list[tuple[str, tuple[str, bytes, str]]]:
    phantom = synthetic.generate(
        np.random.default_rng(seed), shape_kji=CT_SHAPE, spacing_mm=CT_SPACING, n_lesions=1
    )
    paths = synthetic.write_series(phantom, folder)
    return [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]


@pytest.fixture(scope="module")
def ct_report(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    files = ct_files(tmp_path_factory.mktemp("viewer_ct"))
    answer = client.post("/v1/ct", files=files, headers=auth(Role.radiologist))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _audit(settings: Settings, action: str, rid: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    return [e for e in lines if e["action"] == action and e["resource"] == f"report/{rid}"]


def test_the_full_radiograph_keeps_the_source_size_and_values(
    client: TestClient, cxr_id: str
) -> None:
    source = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")))
    meta = client.get(f"/v1/reports/{cxr_id}/radiograph16.json", headers=auth(Role.radiologist))
    assert meta.status_code == 200, meta.text
    info = meta.json()
    assert (info["rows"], info["columns"]) == (source.Rows, source.Columns)
    assert info["window_width"] > 0 and info["value_max"] > info["value_min"]
    assert info["invert"] == (source.PhotometricInterpretation == "MONOCHROME1")
    raw = client.get(f"/v1/reports/{cxr_id}/radiograph16.raw", headers=auth(Role.radiologist))
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["cache-control"] == "private, no-store"
    pixels = np.frombuffer(raw.content, dtype="<u2").reshape(source.Rows, source.Columns)
    # the quantised values are the source's, in order (a linear map of the stored ones)
    stored = source.pixel_array.astype(np.float64)
    assert np.corrcoef(stored.ravel(), pixels.ravel().astype(np.float64))[0, 1] > 0.9999
    assert int(pixels.min()) == 0 and int(pixels.max()) == 65535


def test_the_full_radiograph_is_refused_to_other_roles_and_kinds(
    client: TestClient, cxr_id: str, ct_report: dict[str, Any], settings: Settings
) -> None:
    for role in (Role.lab, Role.pathologist):
        answer = client.get(f"/v1/reports/{cxr_id}/radiograph16.raw", headers=auth(role))
        assert answer.status_code == 403, answer.text
    ct_id = ct_report["id"]
    answer = client.get(f"/v1/reports/{ct_id}/radiograph16.json", headers=auth(Role.radiologist))
    assert (answer.status_code, answer.json()["code"]) == (404, "evidence_not_found")
    outcomes = [e["outcome"] for e in _audit(settings, "report.radiograph_full", cxr_id)]
    assert outcomes.count("ok") >= 1


def test_a_ct_slice_comes_outlined_at_the_key_slice(
    client: TestClient, ct_report: dict[str, Any], settings: Settings
) -> None:
    rid = ct_report["id"]
    (lesion, *_) = ct_report["lesions"]
    k = lesion["key_slice_k"]
    answer = client.get(f"/v1/ct/reports/{rid}/slices/{k}.png", headers=auth(Role.radiologist))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "private, max-age=300"
    rgb = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.int16)
    assert rgb.shape == (CT_SHAPE[1], CT_SHAPE[2], 3)
    coloured = (np.abs(rgb[..., 0] - rgb[..., 2]) > 40).sum()
    assert coloured > 0  # the outline: the only non-grey pixels
    first = client.get(f"/v1/ct/reports/{rid}/slices/0.png", headers=auth(Role.radiologist))
    rgb0 = np.asarray(Image.open(io.BytesIO(first.content)).convert("RGB"), dtype=np.int16)
    assert (np.abs(rgb0[..., 0] - rgb0[..., 2]) > 40).sum() == 0  # no lesion on slice 0
    again = client.get(f"/v1/ct/reports/{rid}/slices/{k}.png", headers=auth(Role.radiologist))
    assert again.content == answer.content  # rendered once, kept
    assert [e["outcome"] for e in _audit(settings, "report.slice", rid)][-3:] == ["ok"] * 3


@pytest.mark.parametrize("window", ["lung", "mediastinum", "bone"])
def test_each_window_renders(client: TestClient, ct_report: dict[str, Any], window: str) -> None:
    url = f"/v1/ct/reports/{ct_report['id']}/slices/5.png?window={window}"
    assert client.get(url, headers=auth(Role.radiologist)).status_code == 200


def test_a_ct_slice_is_refused_to_other_roles_and_audited(
    client: TestClient, ct_report: dict[str, Any], settings: Settings
) -> None:
    rid = ct_report["id"]
    for role in (Role.lab, Role.pathologist):
        answer = client.get(f"/v1/ct/reports/{rid}/slices/3.png", headers=auth(role))
        assert answer.status_code == 403, answer.text
    lines = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    refused = [e for e in lines if e["action"] == "access.refused"
               and e["resource"] == f"GET /v1/ct/reports/{rid}/slices/3.png"]  # fmt: skip
    assert {(e["role"], e["outcome"]) for e in refused} >= {
        ("lab", "role_not_allowed"),
        ("pathologist", "role_not_allowed"),
    }
    assert client.get(f"/v1/ct/reports/{rid}/slices/3.png").status_code == 401


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"slices/{CT_SHAPE[0]}.png", 404, "slice_not_found"),
        ("slices/9999.png", 404, "slice_not_found"),
        ("slices/10000.png", 422, "invalid_request"),
        ("slices/-1.png", 422, "invalid_request"),
        ("slices/one.png", 422, "invalid_request"),
        ("slices/2.png?window=brain", 422, "invalid_request"),
    ],
)
def test_a_bad_slice_or_window_is_a_coded_error(
    client: TestClient, ct_report: dict[str, Any], path: str, status: int, code: str
) -> None:
    answer = client.get(f"/v1/ct/reports/{ct_report['id']}/{path}", headers=auth(Role.radiologist))
    assert (answer.status_code, answer.json()["code"]) == (status, code)


def test_slices_of_a_radiograph_or_an_unknown_report_are_not_found(
    client: TestClient, cxr_id: str
) -> None:
    answer = client.get(f"/v1/ct/reports/{cxr_id}/slices/0.png", headers=auth(Role.radiologist))
    assert (answer.status_code, answer.json()["code"]) == (404, "evidence_not_found")
    answer = client.get("/v1/ct/reports/nope/slices/0.png", headers=auth(Role.radiologist))
    assert (answer.status_code, answer.json()["code"]) == (404, "report_not_found")
