"""The outbox on the real store (SQLite) with real destinations: the folder sink, a
FHIR server that refuses, a port where nothing listens."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine

from aidx.adapters.writeback import BUILD, BUILD_CXR, pack_headers
from aidx.inference.settings import Role
from aidx.inference.settings_sections import FhirSettings
from aidx.integrations.fhir.client import FhirDestination
from aidx.integrations.outbox.destinations import FolderSink
from aidx.integrations.outbox.store import OutboxStore, OutgoingObject, State
from aidx.integrations.outbox.worker import Backoff, OutboxWorker
from aidx.service.app import create_app

from ...conftest import auth, free_port, make_settings
from ...peers import FhirPeer
from ...waiting import wait_until
from ..conftest import AnalysedCxr, cxr_headers, outbox
from .conftest import obj

pytestmark = pytest.mark.integration
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def test_enqueue_is_idempotent_and_claims_are_exclusive(engine: Engine) -> None:
    store = OutboxStore(engine)
    assert store.enqueue(obj()) is True
    assert store.enqueue(obj()) is False  # the same object again: nothing new
    assert store.enqueue(obj(destination="emr")) is True
    now = time.time()
    first = store.claim_due(lease_s=60, limit=10, now=now)
    assert len(first) == 2
    assert store.claim_due(lease_s=60, limit=10, now=now) == []  # leased: nobody else


def test_a_crash_mid_delivery_is_redelivered_after_the_lease(
    engine: Engine, tmp_path: Path
) -> None:
    """A worker that claimed an entry and died (no outcome recorded) leaves a lease;
    when it expires another worker delivers the same object (same key, same file)."""
    store = OutboxStore(engine)
    store.enqueue(obj(payload=b"SR"))
    now = time.time()
    (claimed,) = store.claim_due(lease_s=30, limit=1, now=now)
    sink = FolderSink("pacs", tmp_path / "sink")
    sink.deliver(claimed)  # delivered, then "killed" before mark_delivered
    assert store.claim_due(lease_s=30, limit=1, now=now + 10) == []
    (again,) = store.claim_due(lease_s=30, limit=1, now=now + 31)
    assert again.id == claimed.id
    sink.deliver(again)
    store.mark_delivered(again.id)
    assert [p.name for p in (tmp_path / "sink" / "pacs").iterdir()] == ["1.2.3.bin"]
    assert store.get(again.id).state is State.delivered


def test_backoff_grows_then_the_entry_is_dead(engine: Engine) -> None:
    backoff = Backoff(base_s=2, max_s=10, max_attempts=3)
    assert [backoff.delay_s(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]
    store = OutboxStore(engine)
    store.enqueue(obj(destination="emr"))
    down = FhirDestination("emr", FhirSettings(base_url=f"http://127.0.0.1:{free_port()}/fhir/R4"))
    worker = OutboxWorker(store, {"emr": down}, backoff=backoff)
    import asyncio

    retry_ats = []
    for _ in range(3):
        now = time.time()
        (entry,) = store.claim_due(lease_s=5, limit=1, now=now + 1000)
        asyncio.run(asyncio.to_thread(worker._deliver, entry))
        after = store.get(entry.id)
        retry_ats.append(after.next_attempt_at - now)
        store.engine.dispose()
    final = store.get(entry.id)
    assert final.state is State.failed and final.attempts == 3
    assert "ConnectError" in (final.last_error or "")
    assert 1.5 < retry_ats[0] < 2.5 and 3.5 < retry_ats[1] < 4.5


def test_folder_sink_is_the_default(analysed_cxr: AnalysedCxr, tmp_path: Path) -> None:
    """No PACS, no EMR: SR + overlay + FHIR bundle land in var/outbox, valid; the
    overlay SC (rendered from the analysis' inputs) has the pixels of the PNG."""
    settings = make_settings(tmp_path, enabled_models=["cxr_pneumonia"], outbox_poll_s=0.05)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/cxr", content=analysed_cxr.source, headers=cxr_headers())
        assert answer.is_success
        wait_until(
            lambda: (
                outbox(client)["destinations"]["pacs"]["delivered"] == 2
                and outbox(client)["destinations"]["emr"]["delivered"] == 1
            ),
            what="sink",
        )
        png = client.get(answer.json()["evidence"][0]["url"], headers=auth(Role.radiologist))
        metrics = client.get("/metrics").text  # what an operator alerts on
        assert 'aidx_outbox_entries{destination="pacs",state="delivered"} 2.0' in metrics
        assert 'aidx_outbox_entries{destination="build",state="pending"} 0.0' in metrics
    dicoms = sorted((tmp_path / "outbox" / "pacs").glob("*.dcm"))
    assert len(dicoms) == 2
    (sc,) = [ds for p in dicoms if (ds := pydicom.dcmread(p)).SOPClassUID == SECONDARY_CAPTURE]
    with Image.open(io.BytesIO(png.content)) as image:
        assert (sc.pixel_array == np.asarray(image)).all()
    for path in dicoms:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert run.returncode == 0 and "Error" not in run.stdout + run.stderr
        source = pydicom.dcmread(io.BytesIO(analysed_cxr.source), stop_before_pixels=True)
        assert pydicom.dcmread(path).StudyInstanceUID == source.StudyInstanceUID
    (bundle,) = (tmp_path / "outbox" / "emr").glob("*.json")
    assert '"DiagnosticReport"' in bundle.read_text()


def test_refused_entry_is_dead_then_retried_or_dropped(
    analysed_cxr: AnalysedCxr, tmp_path: Path, fhir_server: FhirPeer
) -> None:
    """An object the FHIR server refuses (400 OperationOutcome) is dead at once, with
    the server's reason; an engineer may retry it or drop it. Other roles may not."""
    settings = make_settings(
        tmp_path,
        enabled_models=["cxr_pneumonia"],
        outbox_poll_s=0.05,
        fhir_base_url=fhir_server.base_url,
    )
    with TestClient(create_app(settings)) as client:
        store: OutboxStore = client.app.state.services.writeback.store  # type: ignore[attr-defined]
        bad = (
            b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": '
            b'{"resourceType": "Observation", "bogus": 1}, "request": {"method": "POST", '
            b'"url": "Observation"}}]}'
        )
        store.enqueue(
            OutgoingObject("emr", "bad-bundle", "fhir-bundle", "application/fhir+json", bad)
        )
        client.app.state.services.writeback.worker.wake()  # type: ignore[attr-defined]
        state = wait_until(
            lambda: (s := outbox(client))["destinations"]["emr"]["failed"] == 1 and s,
            what="dead entry",
        )
        assert "bogus" in state["destinations"]["emr"]["last_error"]
        (dead,) = [e for e in state["entries"] if e["state"] == "failed"]
        assert dead["attempts"] == 1

        assert (
            client.post(
                f"/v1/outbox/{dead['id']}/retry", headers=auth(Role.radiologist)
            ).status_code
            == 403
        )
        retried = client.post(f"/v1/outbox/{dead['id']}/retry", headers=auth(Role.engineer))
        assert retried.status_code == 200 and retried.json()["state"] == "pending"
        wait_until(lambda: store.get(dead["id"]).state is State.failed, what="dead again")
        # Only a dead entry may be dropped; a pending or delivered one is 409.
        assert (
            client.delete(f"/v1/outbox/{dead['id']}", headers=auth(Role.engineer)).status_code
            == 204
        )
        assert (
            client.get(f"/v1/outbox/{dead['id']}", headers=auth(Role.engineer)).status_code == 404
        )
        assert client.post("/v1/cxr", content=analysed_cxr.source, headers=cxr_headers()).is_success
        wait_until(lambda: outbox(client)["destinations"]["emr"]["delivered"] == 1, what="good one")
        good = outbox(client)["entries"][0]
        conflict = client.delete(f"/v1/outbox/{good['id']}", headers=auth(Role.engineer))
        assert conflict.status_code == 409 and conflict.json()["code"] == "outbox_entry_not_failed"
        assert client.get("/v1/outbox?state=nope", headers=auth(Role.engineer)).status_code == 400


def test_a_build_record_whose_report_is_gone_is_dead_with_the_reason(
    analysed_cxr: AnalysedCxr, tmp_path: Path
) -> None:
    """The worker builds a report's objects from its record; a record it can never
    build (its report was deleted) is dead at once, visible, and blocks nothing."""
    settings = make_settings(tmp_path, enabled_models=["cxr_pneumonia"], outbox_poll_s=0.05)
    with TestClient(create_app(settings)) as client:
        writeback = client.app.state.services.writeback  # type: ignore[attr-defined]
        headers = pack_headers([analysed_cxr.source])
        gone = "0f0e0d0c-0b0a-4908-8706-050403020100"
        record = OutgoingObject(BUILD, f"x:{gone}", BUILD_CXR, "application/dicom", headers, gone)
        writeback.store.enqueue(record)
        assert client.post("/v1/cxr", content=analysed_cxr.source, headers=cxr_headers()).is_success
        state = wait_until(
            lambda: (
                (s := outbox(client))["destinations"]["build"]["failed"] == 1
                and s["destinations"]["emr"]["delivered"] == 1
                and s
            ),
            what="the dead record and the good report's objects",
        )
    assert "cannot build" in state["destinations"]["build"]["last_error"]
    assert state["destinations"]["build"]["delivered"] == 1
