"""Clinicians' feedback on a real chest CR's report (the demo model's) and on a real
lab alert (a critical potassium screened by the shipped catalogue): round trip,
replace with history, idempotency per user, role refusals, coded errors, audit."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import ApiKey, Role, Settings, hash_key
from aidx.service.app import create_app

from ..conftest import auth, dicom_bytes, make_settings

SECOND_READER_KEY = "test-second-radiologist-key-0123456789"
SECOND_READER = {"Authorization": f"Bearer {SECOND_READER_KEY}"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = make_settings(
        tmp_path_factory.mktemp("feedback"),
        enabled_models=["cxr_pneumonia", "labs_anomaly"],
        writeback=False,
    )
    second = ApiKey(
        name="radiologist-2", role=Role.radiologist, key_sha256=hash_key(SECOND_READER_KEY)
    )
    settings.api_keys.append(second)
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def cxr_report(client: TestClient) -> dict[str, Any]:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    answer = client.post("/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.fixture(scope="module")
def lab_alert_id(client: TestClient) -> str:
    specimen = {
        "specimen_id": "FB-1", "patient_id": "FB-P1", "sex": "F", "age_y": 50,
        "collected_at": "2026-03-01T08:00:00Z",
        "results": [{"code": "2823-3", "value": 7.1, "unit": "mmol/L"}],  # potassium
    }  # fmt: skip
    answer = client.post("/v1/labs/screen", json={"specimens": [specimen]}, headers=auth(Role.lab))
    assert answer.status_code == 200, answer.text
    alert_ids = answer.json()["specimens"][0]["alert_ids"]
    assert alert_ids, answer.text
    return str(alert_ids[0])


def _post(client: TestClient, rid: str, headers: dict[str, str], *answers: dict[str, Any]) -> Any:
    return client.post(
        f"/v1/reports/{rid}/feedback", json={"answers": list(answers)}, headers=headers
    )


def _audit(settings: Settings, action: str, rid: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    return [e for e in lines if e["action"] == action and e["resource"] == f"report/{rid}"]


def test_answers_round_trip_replace_with_history_and_repeat_idempotently(
    client: TestClient, cxr_report: dict[str, Any], settings: Settings
) -> None:
    rid = cxr_report["id"]
    reader = auth(Role.radiologist)
    agree = {"finding": "Pneumonia", "verdict": "agree"}
    first = _post(client, rid, reader, agree)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["recorded"] == 1 and body["pipeline"] == "cxr"
    assert body["owner_role"] == "radiologist"
    assert {"finding": "Pneumonia", "regions": len(cxr_report["findings"][0]["regions"])} in body[
        "findings"
    ]
    assert [(a["finding"], a["verdict"], a["by"]) for a in body["current"]] == [
        ("Pneumonia", "agree", "radiologist-1")
    ]

    disagree = {"finding": "Pneumonia", "verdict": "disagree", "reason": "false_positive",
                "comment": "old scar, unchanged since 2019"}  # fmt: skip
    assert _post(client, rid, reader, disagree).json()["recorded"] == 1
    again = _post(client, rid, reader, disagree).json()  # a resend: nothing new
    assert again["recorded"] == 0
    view = client.get(f"/v1/reports/{rid}/feedback", headers=reader).json()
    assert view == {k: v for k, v in again.items() if k != "recorded"}
    assert [(a["verdict"], a["current"]) for a in view["history"]] == [
        ("agree", False),
        ("disagree", True),
    ]
    assert [(a["verdict"], a["reason"]) for a in view["current"]] == [
        ("disagree", "false_positive")
    ]

    # Another reader's answer on the same finding is their own, beside the first's.
    assert _post(client, rid, SECOND_READER, {**agree, "verdict": "not_sure"}).status_code == 200
    current = client.get(f"/v1/reports/{rid}/feedback", headers=reader).json()["current"]
    assert sorted((a["by"], a["verdict"]) for a in current) == [
        ("radiologist-1", "disagree"),
        ("radiologist-2", "not_sure"),
    ]
    assert [e["outcome"] for e in _audit(settings, "report.feedback", rid)] == ["ok"] * 4
    assert _audit(settings, "report.feedback.read", rid)[-1]["role"] == "radiologist"


def test_only_the_role_that_owns_the_report_answers(
    client: TestClient, cxr_report: dict[str, Any], lab_alert_id: str, settings: Settings
) -> None:
    rid = cxr_report["id"]
    agree = {"finding": "Pneumonia", "verdict": "agree"}
    for role, code in [
        (Role.pathologist, "role_not_owner"),
        (Role.admin, "role_not_owner"),  # admin reads, but a verdict is a clinician's
        (Role.engineer, "role_not_allowed"),
    ]:
        refused = _post(client, rid, auth(role), agree)
        assert (refused.status_code, refused.json()["code"]) == (403, code), role
    assert "role_not_owner" in [e["outcome"] for e in _audit(settings, "report.feedback", rid)]
    assert client.get(f"/v1/reports/{rid}/feedback", headers=auth(Role.admin)).status_code == 200
    assert client.get(f"/v1/reports/{rid}/feedback", headers=auth(Role.lab)).status_code == 403

    # A lab alert is answered by the lab role, its one finding named by its rule.
    view = client.get(f"/v1/reports/{lab_alert_id}/feedback", headers=auth(Role.lab)).json()
    assert view["pipeline"] == "labs" and view["owner_role"] == "lab"
    rule = view["findings"][0]["finding"]
    answer = {"finding": rule, "verdict": "disagree", "reason": "other", "comment": "haemolysed"}
    assert _post(client, lab_alert_id, auth(Role.lab), answer).json()["recorded"] == 1
    refused = _post(client, lab_alert_id, auth(Role.radiologist), answer)
    assert (refused.status_code, refused.json()["code"]) == (403, "role_not_owner")
    # The alert kept its patient's coarse groups: agreement per sex and age band.
    grouped = client.get(
        "/v1/feedback/agreement?pipeline=labs&by=sex&by=age_band", headers=auth(Role.engineer)
    ).json()["groups"]
    assert [(g["sex"], g["age_band"], g["disagree"]) for g in grouped if g["finding"] == rule] == [
        ("F", "40-64", 1)
    ]


def test_coded_errors_for_unknown_reports_findings_regions_and_bad_answers(
    client: TestClient, cxr_report: dict[str, Any]
) -> None:
    rid, reader = cxr_report["id"], auth(Role.radiologist)
    regions = len(cxr_report["findings"][0]["regions"])
    cases = [
        (str(uuid.uuid4()), {"finding": "Pneumonia", "verdict": "agree"}, 404, "report_not_found"),
        ("not-a-report", {"finding": "Pneumonia", "verdict": "agree"}, 404, "report_not_found"),
        (rid, {"finding": "Fracture", "verdict": "agree"}, 422, "unknown_finding"),
        (rid, {"finding": "Pneumonia", "region": regions, "verdict": "agree"}, 422,
         "unknown_region"),
        (rid, {"finding": "Pneumonia", "verdict": "disagree"}, 422, "invalid_request"),
        (rid, {"finding": "Pneumonia", "verdict": "maybe"}, 422, "invalid_request"),
        (rid, {"finding": "Pneumonia", "verdict": "agree", "comment": "x" * 1001}, 422,
         "invalid_request"),
    ]  # fmt: skip
    for target, answer, status, code in cases:
        refused = _post(client, target, reader, answer)
        assert (refused.status_code, refused.json()["code"]) == (status, code), answer
    twice = _post(client, rid, reader, *[{"finding": "Pneumonia", "verdict": "agree"}] * 2)
    assert twice.json()["code"] == "invalid_request"


def test_the_openapi_document_describes_the_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    path = spec["paths"]["/v1/reports/{rid}/feedback"]
    body = path["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/FeedbackRequest")
    assert {"403", "404", "422"} <= set(path["post"]["responses"])
    schemas = spec["components"]["schemas"]
    assert set(schemas["ReasonCode"]["enum"]) >= {"missed_finding", "wrong_location"}
    assert schemas["FeedbackView"]["properties"]["history"]["type"] == "array"
