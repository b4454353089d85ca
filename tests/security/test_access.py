"""Access you can audit (issue 12): reports answer the roles of their kind only, wrong
keys are throttled per client address, and every refusal, engineer action and STAT
request is in the audit log with the client's address."""

from __future__ import annotations

import time
import uuid

import pytest

from aidx.inference.reports import Report
from aidx.inference.settings import Role
from tests.conftest import auth, dicom_bytes

from .conftest import AUTH_FAILURES_MAX, Secured, cxr


@pytest.fixture(scope="module")
def cxr_report(secured: Secured) -> dict:
    response = cxr(secured.client, dicom_bytes("RG1_UNCR.dcm"))
    assert response.status_code == 200, response.text
    report: dict = response.json()
    return report


def _stored_as(secured: Secured, report: dict, pipeline: str) -> str:
    """A copy of `report` stored as another pipeline's, with an overlay file."""
    rid = str(uuid.uuid4())
    copy = Report.model_validate({**report, "id": rid, "pipeline": pipeline})
    secured.client.app.state.services.reports.save(copy, {"overlay.png": b"\x89PNG"})
    return rid


READERS = {"cxr": Role.radiologist, "ct": Role.radiologist, "wsi": Role.pathologist}


@pytest.mark.parametrize("pipeline", ["cxr", "wsi"])
@pytest.mark.parametrize("role", [Role.radiologist, Role.pathologist, Role.lab])
def test_a_report_and_its_overlay_answer_only_the_roles_of_its_kind(
    secured: Secured, cxr_report: dict, pipeline: str, role: Role
) -> None:
    rid = cxr_report["id"] if pipeline == "cxr" else _stored_as(secured, cxr_report, pipeline)
    allowed = READERS[pipeline] is role
    for url in (f"/v1/reports/{rid}", f"/v1/reports/{rid}/overlay.png"):
        response = secured.client.get(url, headers=auth(role))
        if allowed:
            assert response.status_code == 200, (url, response.text)
        else:
            assert response.status_code == 403, (url, response.text)
            assert response.json()["code"] == "report_kind_not_allowed"
    admin = secured.client.get(f"/v1/reports/{rid}", headers=auth(Role.admin))
    assert admin.status_code == 200
    if not allowed:
        refused = [
            e
            for e in secured.audit()
            if e["resource"] == f"report/{rid}" and e["outcome"] == "report_kind_not_allowed"
        ]
        assert refused and all(e["client"] == "10.0.0.1" for e in refused)


def test_ct_report_routes_answer_radiologists_only(secured: Secured, cxr_report: dict) -> None:
    rid = _stored_as(secured, cxr_report, "wsi")
    for role in (Role.pathologist, Role.lab):
        for url in (f"/v1/ct/reports/{rid}", f"/v1/ct/reports/{rid}/labelmap.npz"):
            assert secured.client.get(url, headers=auth(role)).status_code == 403
    # a radiologist asking the CT route for a slide's report: no such CT report
    response = secured.client.get(
        f"/v1/ct/reports/{rid}/labelmap.npz", headers=auth(Role.radiologist)
    )
    assert response.status_code in (403, 404)


def test_wrong_keys_are_throttled_per_address_and_recorded(secured: Secured) -> None:
    attacker, other = secured.at("203.0.113.7"), secured.at("203.0.113.8")
    wrong = {"Authorization": "Bearer not-a-key-at-all"}
    for _ in range(AUTH_FAILURES_MAX):
        assert attacker.get("/v1/models", headers=wrong).status_code == 401
    for headers in (wrong, auth(Role.engineer)):  # a right key learns nothing now either
        throttled = attacker.get("/v1/models", headers=headers)
        assert throttled.status_code == 429, throttled.text
        assert throttled.json()["code"] == "auth_throttled"
        assert int(throttled.headers["Retry-After"]) >= 1
    # another address is not affected, nor are missing keys counted as guesses
    assert other.get("/v1/models", headers=auth(Role.engineer)).status_code == 200
    for _ in range(AUTH_FAILURES_MAX + 2):
        assert other.get("/v1/models").status_code == 401
    assert other.get("/v1/models", headers=auth(Role.engineer)).status_code == 200
    entries = [e for e in secured.audit() if e.get("client") == "203.0.113.7"]
    outcomes = [e["outcome"] for e in entries if e["action"] == "access.refused"]
    assert outcomes == ["invalid_api_key"] * AUTH_FAILURES_MAX + ["auth_throttled"]
    assert all(e["resource"] == "GET /v1/models" for e in entries)
    assert "not-a-key" not in (secured.var_dir / "audit.log").read_text()


def test_a_thousand_wrong_keys_are_refused_fast_and_leave_a_bounded_trace(
    secured: Secured,
) -> None:
    flood = secured.at("198.51.100.9")
    started = time.perf_counter()
    codes = [
        flood.get("/v1/models", headers={"X-API-Key": f"guess-{i}"}).status_code
        for i in range(1000)
    ]
    assert codes == [401] * AUTH_FAILURES_MAX + [429] * (1000 - AUTH_FAILURES_MAX)
    assert time.perf_counter() - started < 30  # refused at once, no work behind them
    logged = [e for e in secured.audit() if e.get("client") == "198.51.100.9"]
    assert len(logged) == AUTH_FAILURES_MAX + 1  # the throttling once: no flood in the log


def test_403_refusals_are_recorded_with_the_client_address(secured: Secured) -> None:
    response = secured.client.get("/v1/outbox", headers=auth(Role.lab))
    assert response.status_code == 403 and response.json()["code"] == "role_not_allowed"
    last = secured.audit()[-1]
    assert last == {**last, "actor": "lab-1", "role": "lab", "action": "access.refused",
                    "resource": "GET /v1/outbox", "outcome": "role_not_allowed",
                    "client": "10.0.0.1"}  # fmt: skip


def test_engineer_actions_are_recorded_with_outcome_and_address(secured: Secured) -> None:
    engineer = secured.at("192.0.2.44")
    missing = str(uuid.uuid4())
    assert (
        engineer.post(f"/v1/outbox/{missing}/retry", headers=auth(Role.engineer)).status_code == 404
    )
    assert engineer.delete(f"/v1/outbox/{missing}", headers=auth(Role.engineer)).status_code == 404
    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 1, 224, 224],
              "data": [0.0] * (224 * 224)}  # fmt: skip
    infer = engineer.post(
        "/v2/models/cxr_pneumonia/infer", json={"inputs": [tensor]}, headers=auth(Role.engineer)
    )
    assert infer.status_code == 200, infer.text
    mine = [e for e in secured.audit() if e.get("client") == "192.0.2.44"]
    assert [(e["action"], e["outcome"]) for e in mine] == [
        ("outbox.retry", "outbox_entry_not_found"),
        ("outbox.drop", "outbox_entry_not_found"),
        ("v2.infer", "ok"),
    ]
    assert {e["actor"] for e in mine} == {"engineer-1"}
    assert mine[-1]["resource"] == "model/cxr_pneumonia"


def test_stat_follows_the_role_policy_and_is_recorded(secured: Secured) -> None:
    data = dicom_bytes("RG1_UNCR.dcm")
    stat = cxr(secured.client, data, **{"X-Aidx-Priority": "stat"})
    assert stat.status_code == 200, stat.text
    screen = secured.client.post(
        "/v1/labs/screen",
        json={"specimens": []},
        headers={**auth(Role.lab), "X-Aidx-Priority": "STAT"},
    )
    assert screen.status_code == 403 and screen.json()["code"] == "stat_not_allowed"
    routine = secured.client.post(
        "/v1/labs/screen",
        json={"specimens": []},
        headers={**auth(Role.lab), "X-Aidx-Priority": "routine"},
    )
    assert routine.status_code != 403
    stats = [e for e in secured.audit() if e["action"] == "priority.stat"]
    assert [(e["role"], e["resource"], e["outcome"], e["client"]) for e in stats[-2:]] == [
        ("radiologist", "/v1/cxr", "ok", "10.0.0.1"),
        ("lab", "/v1/labs/screen", "stat_not_allowed", "10.0.0.1"),
    ]


def test_wrong_keys_on_routes_with_a_body_are_throttled_and_recorded_too(
    secured: Secured,
) -> None:
    guesser = secured.at("203.0.113.50")
    for _ in range(AUTH_FAILURES_MAX):  # refused before the body is read (service/limits.py)
        wrong = guesser.post("/v1/labs/screen", json={"specimens": []}, headers={"X-API-Key": "no"})
        assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_api_key"
    throttled = guesser.post("/v1/labs/screen", json={"specimens": []}, headers=auth(Role.lab))
    assert throttled.status_code == 429 and throttled.json()["code"] == "auth_throttled"
    assert int(throttled.headers["Retry-After"]) >= 1
    mine = [e["outcome"] for e in secured.audit() if e.get("client") == "203.0.113.50"]
    assert mine == ["invalid_api_key"] * AUTH_FAILURES_MAX + ["auth_throttled"]
