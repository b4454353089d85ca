"""Findings reach a real Orthanc (STOW-RS) and a real FHIR R4 server through the
outbox, across an outage of both, exactly once; a resend is idempotent at both."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.service.app import create_app

from ...conftest import auth, make_settings
from ...peers import FhirPeer, OrthancPeer
from ..conftest import cxr_headers

pytestmark = pytest.mark.integration
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def wait_for(predicate: Any, timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def outbox(client: TestClient) -> dict[str, Any]:
    """GET /v1/outbox, with zero counts for a destination that has no entry yet (the
    worker builds a report's objects after the answer)."""
    answer = client.get("/v1/outbox", headers=auth(Role.engineer))
    assert answer.status_code == 200, answer.text
    state = dict(answer.json())
    for name in ("build", "pacs", "emr", "hl7"):
        state["destinations"].setdefault(name, {"pending": 0, "delivered": 0, "failed": 0})
    return state


@pytest.fixture()
def client(tmp_path: Path, orthanc: OrthancPeer, fhir_server: FhirPeer) -> Iterator[TestClient]:
    orthanc.clear()
    settings = make_settings(
        tmp_path,
        enabled_models=["cxr_pneumonia"],
        pacs_dicomweb_url=orthanc.dicomweb,
        fhir_base_url=fhir_server.base_url,
        outbox_poll_s=0.05,
        outbox_backoff_base_s=0.1,
        outbox_backoff_max_s=0.5,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_outage_then_everything_arrives_once(
    client: TestClient, orthanc: OrthancPeer, fhir_server: FhirPeer, tmp_path: Path
) -> None:
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("RG1_UNCR.dcm")).read_bytes()  # type: ignore[arg-type]
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    orthanc.stop()
    fhir_server.stop()
    try:
        answer = client.post("/v1/cxr", content=data, headers=cxr_headers())
        assert answer.status_code == 200, answer.text
        report = answer.json()
        # Both peers are down: the entries wait, with the reason visible per destination.
        state = wait_for(
            lambda: (
                (s := outbox(client))["destinations"].get("emr", {}).get("last_error")
                and s["destinations"].get("pacs", {}).get("last_error")
                and s
            ),
            what="failed attempts",
        )
        assert state["destinations"]["pacs"]["pending"] == 2  # SR + overlay SC
        assert state["destinations"]["emr"]["pending"] == 1
        assert all(e["attempts"] >= 1 for e in state["entries"])
        assert "payload" not in state["entries"][0]
    finally:
        orthanc.start()
        fhir_server.start()
    wait_for(
        lambda: (
            outbox(client)["destinations"]["pacs"]["delivered"] == 2
            and outbox(client)["destinations"]["emr"]["delivered"] == 1
        ),
        what="delivery",
    )

    # A resubmission of the same image adds nothing; a forced resend changes nothing.
    again = client.post("/v1/cxr", content=data, headers=cxr_headers())
    assert again.json()["id"] == report["id"]
    delivered = {k: d["delivered"] for k, d in outbox(client)["destinations"].items()}
    assert delivered == {"build": 1, "pacs": 2, "emr": 1, "hl7": 0}
    store = client.app.state.services.writeback.store  # type: ignore[attr-defined]
    destinations = client.app.state.services.writeback.worker.destinations  # type: ignore[attr-defined]
    for entry in store.list():  # the build too: rebuilding queues nothing new
        destinations[entry.destination].deliver(entry)
    assert len(store.list()) == 4

    # PACS: the SR and the overlay, once each, in the source study.
    instances = orthanc.instances()
    ours = [
        i for i in instances if i["MainDicomTags"].get("SOPInstanceUID") != source.SOPInstanceUID
    ]
    assert len(ours) == 2
    files = {pydicom.dcmread(io.BytesIO(orthanc.file(i["ID"]))).SOPClassUID: i for i in ours}
    assert set(files) == {SR_CLASS, SC_CLASS}
    sr_bytes = orthanc.file(files[SR_CLASS]["ID"])
    sr = pydicom.dcmread(io.BytesIO(sr_bytes))
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    path = tmp_path / "from-orthanc-sr.dcm"
    path.write_bytes(sr_bytes)
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    assert run.returncode == 0 and "Error" not in run.stdout + run.stderr

    # EMR: one DiagnosticReport, searchable by patient, with one Observation per finding.
    patients = fhir_server.search("Patient", identifier=f"urn:aidx:patient-id|{source.PatientID}")
    assert len(patients) == 1
    reports = fhir_server.search("DiagnosticReport", subject=f"Patient/{patients[0]['id']}")
    assert len(reports) == 1
    diagnostic = reports[0]
    assert diagnostic["status"] == "preliminary"
    assert diagnostic["identifier"][0]["value"] == report["id"]
    assert len(diagnostic["result"]) == len(report["findings"])
    present = {f["concept"]["code"] for f in report["findings"] if f["present"]}
    assert {c["coding"][0]["code"] for c in diagnostic.get("conclusionCode", [])} == present
    observations = fhir_server.search("Observation", subject=f"Patient/{patients[0]['id']}")
    assert len(observations) == len(report["findings"])
    by_code = {o["code"]["coding"][0]["code"]: o for o in observations}
    for finding in report["findings"]:
        obs = by_code[finding["concept"]["code"]]
        assert obs["valueQuantity"]["value"] == pytest.approx(finding["probability"], abs=1e-6)
        assert obs["interpretation"][0]["coding"][0]["code"] == (
            "POS" if finding["present"] else "NEG"
        )
        assert report["model"]["name"] in obs["method"]["text"]
    assert len(fhir_server.search("ImagingStudy")) == 1
