"""Agreement follows the clinicians' current answers on a real chest CR's report:
each answer moves the rate, a replaced answer counts once, and every rate comes with
its n, in the API and as counts on /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aidx.inference.settings import ApiKey, Role, hash_key
from aidx.service.app import create_app

from ..conftest import auth, dicom_bytes, make_settings

SECOND_KEY = "test-agreement-second-reader-0123456789"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    var_dir: Path = tmp_path_factory.mktemp("agreement")
    settings = make_settings(var_dir, enabled_models=["cxr_pneumonia"], writeback=False)
    settings.api_keys.append(
        ApiKey(name="radiologist-2", role=Role.radiologist, key_sha256=hash_key(SECOND_KEY))
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _pneumonia(client: TestClient) -> dict[str, Any]:
    answer = client.get("/v1/feedback/agreement?pipeline=cxr", headers=auth(Role.engineer))
    assert answer.status_code == 200, answer.text
    (group,) = [g for g in answer.json()["groups"] if g["finding"] == "Pneumonia"]
    return dict(group)


def _metric_counts(client: TestClient) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "aidx_feedback_answers":
            for sample in family.samples:
                verdict = sample.labels["verdict"]
                found[verdict] = found.get(verdict, 0) + sample.value
    return found


def test_agreement_moves_with_each_current_answer_and_carries_its_n(client: TestClient) -> None:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    report = client.post("/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers).json()
    said_present = report["findings"][0]["present"] is True
    url = f"/v1/reports/{report['id']}/feedback"

    def answer(key: dict[str, str], verdict: str, reason: str | None = None) -> None:
        body = {"answers": [{"finding": "Pneumonia", "verdict": verdict, "reason": reason}]}
        assert client.post(url, json=body, headers=key).status_code == 200

    answer(auth(Role.radiologist), "agree")
    first = _pneumonia(client)
    assert (
        first["model"] == "cxr_pneumonia" and first["model_version"] == report["model"]["version"]
    )
    assert first["agreement"] == {"value": 1.0, "n": 1}
    assert first["ppv"] == ({"value": 1.0, "n": 1} if said_present else {"value": None, "n": 0})

    answer({"Authorization": f"Bearer {SECOND_KEY}"}, "disagree", "false_positive")
    assert _pneumonia(client)["agreement"] == {"value": 0.5, "n": 2}
    assert _metric_counts(client) == {"agree": 1.0, "disagree": 1.0}

    answer(auth(Role.radiologist), "not_sure")  # replaces the first reader's answer
    now = _pneumonia(client)
    assert (now["answers"], now["agree"], now["disagree"], now["not_sure"]) == (2, 0, 1, 1)
    assert now["agreement"] == {"value": 0.0, "n": 1}
    assert _metric_counts(client) == {"disagree": 1.0, "not_sure": 1.0}
    refused = client.get("/v1/feedback/agreement", headers=auth(Role.radiologist))
    assert refused.status_code == 403
