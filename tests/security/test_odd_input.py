"""Correctness under odd input (issue 12): out-of-range sequence numbers, a CR cut
short, re-sends, and the /v2 health routes' schema."""

from __future__ import annotations

import time

import pytest

from aidx.inference.reports import report_id
from aidx.inference.settings import Role
from tests.conftest import auth, dicom_bytes

from .conftest import Secured, cxr

TOO_BIG = str(2**63)  # one past SQLite's signed 64-bit integers


def test_an_alert_sequence_past_64_bits_is_a_coded_422(secured: Secured) -> None:
    response = secured.client.get(f"/v1/labs/alerts?after={TOO_BIG}", headers=auth(Role.lab))
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    largest = secured.client.get(f"/v1/labs/alerts?after={2**63 - 1}", headers=auth(Role.lab))
    assert largest.status_code == 200 and largest.json()["alerts"] == []


@pytest.mark.parametrize("last_event_id", [TOO_BIG, "9" * 5000, "12abc", "-1"])
def test_an_impossible_last_event_id_is_ignored_not_a_cut_stream(
    secured: Secured, last_event_id: str
) -> None:
    headers = {**auth(Role.lab), "Last-Event-ID": last_event_id}
    with secured.client.stream("GET", "/v1/labs/alerts/stream", headers=headers) as stream:
        assert stream.status_code == 200
        text = "".join(stream.iter_text())
    assert ": connected" in text and ": keep-alive" in text  # ran to its own end


def test_a_cr_cut_short_is_another_report_and_never_replaces_the_intact_ones(
    secured: Secured,
) -> None:
    intact = dicom_bytes("RG1_UNCR.dcm")
    first = cxr(secured.client, intact)
    assert first.status_code == 200, first.text
    seen = {first.json()["id"]}
    for cut in (1, 2):
        response = cxr(secured.client, intact[:-cut])
        if response.status_code == 200:  # decodable: a report of its own
            assert response.json()["id"] not in seen
            seen.add(response.json()["id"])
        else:  # or refused with a code
            assert 400 <= response.status_code < 500 and response.json()["code"]
    stored = secured.client.get(f"/v1/reports/{first.json()['id']}", headers=auth(Role.radiologist))
    assert stored.json()["created_at"] == first.json()["created_at"]


def test_a_resend_of_the_identical_input_keeps_the_first_created_at(secured: Secured) -> None:
    data = dicom_bytes("RG1_UNCI.dcm")
    first = cxr(secured.client, data).json()
    time.sleep(0.01)
    again = cxr(secured.client, data).json()
    assert again["id"] == first["id"] and again["created_at"] == first["created_at"]
    stored = secured.client.get(f"/v1/reports/{first['id']}", headers=auth(Role.radiologist))
    assert stored.json()["created_at"] == first["created_at"]


def test_report_ids_key_on_content_model_and_parameters() -> None:
    from aidx.inference.reports import ModelRef

    model = ModelRef(name="m", version=1, sha256="s", demo_weights=True)
    base = report_id("cxr", "c" * 64, model, {"ood_policy": "warn"})
    assert base == report_id("cxr", "c" * 64, model, {"ood_policy": "warn"})
    assert base != report_id("cxr", "d" * 64, model, {"ood_policy": "warn"})
    assert base != report_id("cxr", "c" * 64, model, {"ood_policy": "not_assessed"})
    newer = model.model_copy(update={"version": 2})
    assert base != report_id("cxr", "c" * 64, newer, {"ood_policy": "warn"})


HEALTH = ["/v2/health/live", "/v2/health/ready", "/v2/models/{name}/ready"]


@pytest.mark.parametrize("path", HEALTH)
def test_v2_health_schema_says_what_is_answered_an_empty_body(secured: Secured, path: str) -> None:
    schema = secured.client.get("/openapi.json").json()
    responses = schema["paths"][path]["get"]["responses"]
    assert "content" not in responses["200"]  # Triton's: the status alone
    url = path.format(name="cxr_pneumonia")
    answer = secured.client.get(url, headers=auth(Role.engineer))
    assert answer.status_code == 200 and answer.content == b""
    assert str(answer.status_code) in responses


@pytest.mark.integration
def test_tritonclient_reads_the_health_routes(live_server: str) -> None:
    import tritonclient.http as httpclient

    triton = httpclient.InferenceServerClient(url=live_server)
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("cxr_pneumonia", headers=auth(Role.engineer))
    assert not triton.is_model_ready("no_such_model", headers=auth(Role.engineer))
