"""Findings reach a real Orthanc (STOW-RS) and a real FHIR R4 server through the
outbox, across an outage of both, exactly once; a resend is idempotent at both."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from ...conftest import dicom_bytes
from ...peers import FhirPeer, OrthancPeer
from ...waiting import wait_until
from ..conftest import a_resend_changes_nothing, cxr_headers, outbox, writeback_client

pytestmark = pytest.mark.integration
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture()
def client(tmp_path: Path, orthanc: OrthancPeer, fhir_server: FhirPeer) -> Iterator[TestClient]:
    with writeback_client(tmp_path, "cxr_pneumonia", orthanc, fhir_server) as test_client:
        yield test_client


def _analyse_during_an_outage(
    client: TestClient, orthanc: OrthancPeer, fhir_server: FhirPeer, data: bytes
) -> dict[str, Any]:
    """The report of `data` posted while both peers are down; they are back after."""
    orthanc.stop()
    fhir_server.stop()
    try:
        answer = client.post("/v1/cxr", content=data, headers=cxr_headers())
        assert answer.status_code == 200, answer.text
        # Both peers are down: the entries wait, with the reason visible per destination.
        # (Destinations are tried side by side: wait until every entry has had its try.)
        state = wait_until(
            lambda: (
                (s := outbox(client))["destinations"].get("emr", {}).get("last_error")
                and s["destinations"].get("pacs", {}).get("last_error")
                and s["destinations"]["pacs"]["pending"] == 2
                and all(e["attempts"] >= 1 for e in s["entries"])
                and s
            ),
            what="a failed attempt at every entry",
        )
        assert state["destinations"]["pacs"]["pending"] == 2  # SR + overlay SC
        assert state["destinations"]["emr"]["pending"] == 1
        assert "payload" not in state["entries"][0]
        return dict(answer.json())
    finally:
        orthanc.start()
        fhir_server.start()


def _sr_and_overlay_once_in_the_study(
    orthanc: OrthancPeer, source: pydicom.Dataset, tmp_path: Path
) -> None:
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


def _one_diagnostic_report_with_its_observations(
    fhir_server: FhirPeer, source: pydicom.Dataset, report: dict[str, Any]
) -> None:
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


def test_outage_then_everything_arrives_once(
    client: TestClient, orthanc: OrthancPeer, fhir_server: FhirPeer, tmp_path: Path
) -> None:
    data = dicom_bytes("RG1_UNCR.dcm")
    source = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    report = _analyse_during_an_outage(client, orthanc, fhir_server, data)
    wait_until(
        lambda: (
            outbox(client)["destinations"]["pacs"]["delivered"] == 2
            and outbox(client)["destinations"]["emr"]["delivered"] == 1
        ),
        what="delivery",
    )

    # A resubmission of the same image adds nothing; a forced resend changes nothing.
    again = client.post("/v1/cxr", content=data, headers=cxr_headers())
    assert again.json()["id"] == report["id"]
    a_resend_changes_nothing(client)

    # PACS: the SR and the overlay, once each, in the source study.
    _sr_and_overlay_once_in_the_study(orthanc, source, tmp_path)
    # EMR: one DiagnosticReport, searchable by patient, with one Observation per finding.
    _one_diagnostic_report_with_its_observations(fhir_server, source, report)
    assert len(fhir_server.search("ImagingStudy")) == 1
