"""Turnaround of a real chest CR analysed over REST and written back to a real
Orthanc (STOW-RS): the report carries received, analysed and delivered times per
destination, and /metrics has `aidx_turnaround_seconds` for each stage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aidx.inference.settings import Role
from aidx.service.app import create_app

from ..conftest import auth, dicom_bytes, make_settings
from ..peers import OrthancPeer, missing_peers
from ..waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    if missing_peers():
        pytest.fail(f"real peers are not installed ({missing_peers()}): run `make peers`")
    peer = OrthancPeer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture()
def client(tmp_path: Path, orthanc: OrthancPeer) -> Iterator[TestClient]:
    """aidx writing back to the real Orthanc; the EMR's bundle goes to a folder sink."""
    orthanc.clear()
    settings = make_settings(
        tmp_path, enabled_models=["cxr_pneumonia"], pacs_dicomweb_url=orthanc.dicomweb,
        outbox_poll_s=0.05, outbox_backoff_base_s=0.1, outbox_backoff_max_s=0.5,
    )  # fmt: skip
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _delivered_everywhere(client: TestClient, rid: str) -> dict[str, Any] | None:
    answer = client.get(f"/v1/reports/{rid}", headers=auth(Role.radiologist))
    assert answer.status_code == 200, answer.text
    turnaround = answer.json()["turnaround"]
    states = {d["destination"]: d["state"] for d in turnaround["deliveries"]}
    return turnaround if states == {"pacs": "delivered", "fhir": "delivered"} else None


def _turnaround_counts(client: TestClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    counts = {}
    for family in text_string_to_metric_families(text):
        if family.name == "aidx_turnaround_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    counts[(sample.labels["pipeline"], sample.labels["stage"])] = sample.value
    return counts


def test_a_cxr_report_has_its_turnaround_and_the_histogram_counts_each_stage(
    client: TestClient, orthanc: OrthancPeer
) -> None:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    answer = client.post("/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers)
    assert answer.status_code == 200, answer.text
    first = answer.json()["turnaround"]
    received = datetime.fromisoformat(first["received_at"])
    analysed = datetime.fromisoformat(first["analysed_at"])
    assert received <= analysed and first["analysed_s"] >= 0
    assert first["deliveries"] == []  # filled when the report is read

    rid = answer.json()["id"]
    turnaround = wait_until(lambda: _delivered_everywhere(client, rid), what="delivery")
    assert len(orthanc.instances()) == 2  # the SR and the overlay SC are in the PACS
    for delivery in turnaround["deliveries"]:
        assert datetime.fromisoformat(delivery["delivered_at"]) >= analysed
        assert delivery["seconds"] >= turnaround["analysed_s"]

    counts = wait_until(
        lambda: (c := _turnaround_counts(client)).get(("cxr", "delivered_fhir")) and c,
        what="the delivered stages on /metrics",
    )
    assert counts[("cxr", "analysed")] == 1
    assert counts[("cxr", "delivered_pacs")] == 1  # once for the report, not per object
    assert counts[("cxr", "delivered_fhir")] == 1
