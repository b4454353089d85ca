"""Imaging reports to the EMR as HL7 v2 ORU^R01 over MLLP, through the outbox, against
an independent peer (hl7apy's MLLPServer): strict-valid content, ACK AA = delivered,
AE or silence = retried with backoff, AR for a bad message = dead, a peer that is down
gets the message once it is back, and a resend carries the same MSH-10."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from aidx.adapters.writeback import HL7, destinations_from, objects_for
from aidx.inference.reports import Report
from aidx.inference.settings_sections import EmrSettings
from aidx.inference.store import create_store, init_store
from aidx.integrations.hl7.report_oru import build_report_oru, report_control_id
from aidx.integrations.hl7.sender import MllpDestination
from aidx.integrations.outbox.store import OutboxStore, State
from aidx.integrations.outbox.worker import Backoff, OutboxWorker
from aidx.service.app import create_app

from ...conftest import dicom_bytes, make_settings
from ...waiting import wait_until
from ..conftest import AnalysedCxr, cxr_headers, outbox, outbox_drained
from .peer import Answer, Hl7Peer

pytestmark = pytest.mark.integration


def strict(text: str):  # type: ignore[no-untyped-def]
    message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
    message.validate()
    return message


@pytest.fixture()
def peer() -> Iterator[Hl7Peer]:
    hl7_peer = Hl7Peer()
    try:
        yield hl7_peer
    finally:
        hl7_peer.stop()


def test_oru_content_is_strict_valid_and_deterministic(analysed_cxr: AnalysedCxr) -> None:
    report = analysed_cxr.report
    control_id = report_control_id(report.id, HL7)
    assert control_id == report_control_id(report.id, HL7) != report_control_id(report.id, "x")
    data = build_report_oru(report, control_id=control_id, receiving=("RIS", "WARD"))
    assert data == build_report_oru(report, control_id=control_id, receiving=("RIS", "WARD"))
    msg = strict(data.decode())
    assert msg.msh.msh_10.value == control_id and len(control_id) <= 20
    assert msg.msh.msh_5.value == "RIS"
    text = data.decode()
    segments = [s.split("|") for s in text.strip("\r").split("\r")]
    obr = next(s for s in segments if s[0] == "OBR")
    assert obr[25] == "P" and obr[24] == "RX"
    obx = [s for s in segments if s[0] == "OBX"]
    assert obx[0][3].startswith("110180^") and obx[0][5] == report.source.study_instance_uid
    findings = obx[1:]
    assert len(findings) == len(report.findings)
    for segment, finding in zip(findings, report.findings, strict=True):
        assert segment[2] == "NM" and segment[11] == "P"
        assert segment[3].split("^")[0] == finding.concept.code
        assert float(segment[5]) == pytest.approx(finding.probability, abs=1e-4)
        assert segment[8] == ("A" if finding.present else "N")
        assert segment[17].split("^")[0] == report.model.name
    pid = next(s for s in segments if s[0] == "PID")
    assert pid[3] == report.source.patient_id


def test_peer_down_then_back_gets_it_once_and_a_resend_has_the_same_id(
    tmp_path: Path, peer: Hl7Peer
) -> None:
    data = dicom_bytes("RG1_UNCR.dcm")
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    settings = make_settings(
        tmp_path, enabled_models=["cxr_pneumonia"],
        emr_mllp_host="127.0.0.1", emr_mllp_port=peer.port, emr_mllp_ack_timeout_s=5,
        emr_hl7_receiving_application="RIS", outbox_poll_s=0.05,
        outbox_backoff_base_s=0.1, outbox_backoff_max_s=0.5,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/cxr", content=data, headers=cxr_headers())
        assert answer.status_code == 200, answer.text
        report = Report.model_validate(answer.json())
        # The peer is down: the ORU waits in the outbox, the reason visible.
        state = wait_until(
            lambda: (s := outbox(client))["destinations"].get(HL7, {}).get("last_error") and s,
            what="a failed attempt",
        )
        assert state["destinations"][HL7]["pending"] == 1
        assert "no ACK" in state["destinations"][HL7]["last_error"]
        peer.start()
        wait_until(lambda: outbox(client)["destinations"][HL7]["delivered"] == 1, what="delivery")
        assert len(peer.received) == 1
        # The other destinations (folder sinks here) are unaffected.
        assert outbox(client)["destinations"]["emr"]["delivered"] == 1

        # A resubmission adds nothing; a forced resend is the same message, same MSH-10.
        again = client.post("/v1/cxr", content=data, headers=cxr_headers())
        assert again.json()["id"] == report.id
        wait_until(lambda: outbox_drained(client), what="the resubmission to be handled")
        assert outbox(client)["destinations"][HL7]["delivered"] == 1
        assert len(peer.received) == 1
        store = client.app.state.services.writeback.store  # type: ignore[attr-defined]
        entry = next(e for e in store.list(destination=HL7))
        destinations = destinations_from(
            settings.pacs, settings.fhir, settings.emr,
            calling_ae=settings.dicom.ae_title, sink_root=settings.outbox_dir,
        )  # fmt: skip
        destinations[HL7].deliver(entry)
    assert len(peer.received) == 2 and peer.received[0] == peer.received[1]

    msg = strict(peer.received[0])
    control_id = report_control_id(report.id, HL7)
    assert msg.msh.msh_10.value == control_id == entry.object_key
    assert msg.msh.msh_5.value == "RIS"
    assert msg.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    segments = [s.split("|") for s in peer.received[0].strip("\r").split("\r")]
    assert next(s for s in segments if s[0] == "PID")[3] == source.PatientID
    obx = [s for s in segments if s[0] == "OBX"]
    assert obx[0][5] == source.StudyInstanceUID
    assert {s[3].split("^")[0] for s in obx[1:]} == {f.concept.code for f in report.findings}
    assert all(s[11] == "P" for s in obx)


def _worker(tmp_path: Path, port: int, *, ack_timeout_s: float = 5.0) -> OutboxWorker:
    engine = create_store(f"sqlite:///{tmp_path / 'outbox.db'}")
    init_store(engine)
    emr = EmrSettings(mllp_host="127.0.0.1", mllp_port=port, mllp_ack_timeout_s=ack_timeout_s)
    destination = MllpDestination(HL7, emr)
    return OutboxWorker(
        OutboxStore(engine), {HL7: destination}, backoff=Backoff(0.05, 0.1, max_attempts=5)
    )


def _enqueue(worker: OutboxWorker, report: Report) -> str:
    objects = objects_for(report, [], overlay_rgb=None, patient_system="urn:x",
                          hl7_receiving=("EMR", "HOSPITAL"))  # fmt: skip
    hl7 = [o for o in objects if o.destination == HL7]
    assert asyncio.run(worker.enqueue(hl7)) == 1
    return worker.store.list(destination=HL7)[0].id


def _pass(worker: OutboxWorker) -> None:
    """The worker's next pass that finds the entry due (once its backoff has passed)."""
    wait_until(lambda: asyncio.run(worker.run_once()), what="the entry to come due")


def test_ae_and_silence_are_retried_until_aa(
    tmp_path: Path, peer: Hl7Peer, analysed_cxr: AnalysedCxr
) -> None:
    peer.answers.extend(
        [Answer("AE", "207", "database busy"), Answer(silent=True), Answer(other_control_id=True)]
    )
    peer.start()
    worker = _worker(tmp_path, peer.port, ack_timeout_s=0.5)
    eid = _enqueue(worker, analysed_cxr.report)
    errors = []
    for _ in range(3):
        _pass(worker)
        entry = worker.store.get(eid)
        assert entry.state is State.pending
        errors.append(entry.last_error or "")
    assert "AE" in errors[0] and "207" in errors[0] and "database busy" in errors[0]
    assert "TimeoutError" in errors[1]
    assert "another message" in errors[2]
    _pass(worker)
    entry = worker.store.get(eid)
    assert entry.state is State.delivered and entry.attempts == 4
    control_ids = {parse_message(m).msh.msh_10.value for m in peer.received}
    assert control_ids == {entry.object_key}  # every try was the same message


def test_a_refusal_for_a_bad_message_makes_the_entry_dead(
    tmp_path: Path, peer: Hl7Peer, analysed_cxr: AnalysedCxr
) -> None:
    peer.answers.append(Answer("AR", "101", "PID-3 required"))
    peer.start()
    worker = _worker(tmp_path, peer.port)
    eid = _enqueue(worker, analysed_cxr.report)
    _pass(worker)
    entry = worker.store.get(eid)
    assert entry.state is State.failed
    assert entry.last_error and "AR" in entry.last_error and "101" in entry.last_error
    assert "PID-3 required" in entry.last_error
    # Retried by hand (an engineer fixed the receiver), it goes through.
    worker.store.retry(eid)
    _pass(worker)
    assert worker.store.get(eid).state is State.delivered
