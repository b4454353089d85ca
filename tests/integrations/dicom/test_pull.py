"""DICOMweb pull against a real Orthanc: a study STOWed into the PACS is pulled by
`POST /v1/studies/{uid}/analyze` (QIDO-RS, WADO-RS), routed by the intake's rules,
analysed, and its SR + overlay come back into the same study through the outbox.
The failures a caller can meet answer clear codes, never a 500."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from aidx.inference.settings import Role
from aidx.service.app import create_app

from ...conftest import auth, dicom_bytes, free_port, make_settings
from ...peers import OrthancPeer
from ...waiting import wait_until
from ..conftest import outbox

pytestmark = pytest.mark.integration
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def _cr() -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")))


def _hand_series(cr: pydicom.Dataset, study_uid: str) -> pydicom.Dataset:
    """A second series in the study that no rule wants (an extremity radiograph)."""
    other = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")))
    other.StudyInstanceUID = study_uid
    other.SeriesInstanceUID = generate_uid()
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    other.SeriesNumber = 99
    other.BodyPartExamined = "HAND"
    return other


def _tiny_chest_series(cr: pydicom.Dataset) -> pydicom.Dataset:
    """A series the rules send to cxr but the pipeline refuses (128 px a side)."""
    from pydicom.data import get_testdata_file

    tiny = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate"):
        setattr(tiny, keyword, cr.get(keyword, ""))
    tiny.Modality, tiny.BodyPartExamined, tiny.SeriesNumber = "CR", "CHEST", 77
    return tiny


def stow(orthanc: OrthancPeer, *datasets: pydicom.Dataset) -> None:
    DICOMwebClient(orthanc.dicomweb).store_instances(list(datasets))


def analyze(client: TestClient, uid: str, role: Role = Role.engineer) -> Any:
    return client.post(f"/v1/studies/{uid}/analyze", headers=auth(role))


@pytest.fixture()
def client(tmp_path: Path, orthanc: OrthancPeer) -> Iterator[TestClient]:
    orthanc.clear()
    settings = make_settings(
        tmp_path, enabled_models=["cxr_pneumonia"], pacs_dicomweb_url=orthanc.dicomweb,
        outbox_poll_s=0.05, outbox_backoff_base_s=0.1, outbox_backoff_max_s=0.5,
    )  # fmt: skip
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_pull_routes_analyses_and_writes_back_into_the_study(
    client: TestClient, orthanc: OrthancPeer
) -> None:
    cr = _cr()
    study = str(cr.StudyInstanceUID)
    stow(orthanc, cr, _hand_series(cr, study), _tiny_chest_series(cr))

    answer = analyze(client, study, Role.radiologist)
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["study_instance_uid"] == study
    assert (summary["analysed_series"], summary["skipped_series"]) == (1, 2)
    ran = next(s for s in summary["series"] if s["status"] == "analysed")
    skipped = next(s for s in summary["series"] if s["series_number"] == 99)
    refused = next(s for s in summary["series"] if s["series_number"] == 77)
    assert refused["status"] == "skipped" and refused["pipeline"] == "cxr"
    assert refused["reason"] == "cxr: image_too_small", refused
    assert ran["series_instance_uid"] == cr.SeriesInstanceUID
    assert (ran["pipeline"], ran["rule"], ran["instances"]) == ("cxr", "chest-radiograph", 1)
    assert skipped["series_number"] == 99 and skipped["reason"] == "no routing rule matches"
    assert summary["reports"] == ran["reports"] and len(ran["reports"]) == 1
    rid = ran["reports"][0]
    report = client.get(summary["links"][rid], headers=auth(Role.radiologist)).json()
    assert report["source"]["sop_instance_uid"] == cr.SOPInstanceUID
    assert report["findings"]

    # The writeback: SR + overlay SC, in Orthanc, in the same study, once each.
    def ours() -> list[pydicom.Dataset]:
        found = DICOMwebClient(orthanc.dicomweb).search_for_instances(study)
        return [pydicom.Dataset.from_json(i) for i in found
                if pydicom.Dataset.from_json(i).SOPClassUID in (SR_CLASS, SC_CLASS)]  # fmt: skip

    written = wait_until(lambda: len(ours()) == 2 and ours(), what="SR + SC in Orthanc")
    assert {str(d.SOPClassUID) for d in written} == {SR_CLASS, SC_CLASS}
    sr_meta = next(d for d in written if d.SOPClassUID == SR_CLASS)
    sr = DICOMwebClient(orthanc.dicomweb).retrieve_instance(
        study, sr_meta.SeriesInstanceUID, sr_meta.SOPInstanceUID
    )
    assert sr.StudyInstanceUID == study
    referenced = {
        str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for item in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    }
    assert referenced == {str(cr.SOPInstanceUID)}

    # Pulling again is idempotent: the same report, nothing new in the outbox or Orthanc.
    before = outbox(client)["destinations"]
    again = analyze(client, study)
    assert again.status_code == 200 and again.json()["reports"] == [rid]
    assert outbox(client)["destinations"]["pacs"]["delivered"] == before["pacs"]["delivered"]
    assert len(ours()) == 2
    queued = {k: d["pending"] + d["delivered"] for k, d in outbox(client)["destinations"].items()}
    assert queued == {"build": 1, "pacs": 2, "emr": 1, "hl7": 0}


def test_unknown_study_unroutable_study_bad_uid_and_role(
    client: TestClient, orthanc: OrthancPeer
) -> None:
    missing = analyze(client, generate_uid())
    assert missing.status_code == 404 and missing.json()["code"] == "study_not_found"

    cr = _cr()
    hand_only = generate_uid()
    stow(orthanc, _hand_series(cr, hand_only))
    unroutable = analyze(client, hand_only)
    assert unroutable.status_code == 422, unroutable.text
    assert unroutable.json()["code"] == "no_routable_series"
    assert "no routing rule matches" in unroutable.json()["message"]

    assert analyze(client, "1.2.x.3").json()["code"] == "invalid_study_uid"
    forbidden = analyze(client, hand_only, Role.lab)
    assert forbidden.status_code == 403


class _Broken(http.server.BaseHTTPRequestHandler):
    """A 'PACS' that fails: 500 on QIDO, or 200 with something that is not DICOM JSON."""

    garbage = False
    body = b"<html>proxy error</html>"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.body
        self.send_response(200 if self.garbage else 500)
        self.send_header("Content-Type", "application/dicom+json" if self.garbage else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("where", "status", "code"),
    [("nothing", 503, "pacs_unreachable"), ("http-500", 502, "pacs_error"),
     ("garbage", 502, "pacs_error"), ("wrong-shape", 502, "pacs_error"),
     ("unset", 503, "pacs_not_configured")],
)  # fmt: skip
def test_pacs_failures_answer_clear_codes(
    tmp_path: Path, where: str, status: int, code: str
) -> None:
    server = None
    url: str | None = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens
    if where in ("http-500", "garbage", "wrong-shape"):
        body = b'{"00080060": 1}' if where == "wrong-shape" else _Broken.body
        handler = type("Handler", (_Broken,), {"garbage": where != "http-500", "body": body})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    elif where == "unset":
        url = None
    settings = make_settings(tmp_path, enabled_models=[], pacs_dicomweb_url=url)
    try:
        with TestClient(create_app(settings)) as client:
            answer = analyze(client, generate_uid())
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code


def test_pull_analyses_a_chest_ct_series_as_one_series(
    tmp_path: Path, orthanc: OrthancPeer
) -> None:
    from .test_seg import ct_series

    orthanc.clear()
    settings = make_settings(
        tmp_path, enabled_models=["ct_pneumonia"], pacs_dicomweb_url=orthanc.dicomweb,
        outbox_poll_s=0.05,
    )  # fmt: skip
    blobs = ct_series(tmp_path / "series", seed=11)
    stow(orthanc, *(pydicom.dcmread(io.BytesIO(b)) for b in blobs))
    study_uid = str(pydicom.dcmread(io.BytesIO(blobs[0]), stop_before_pixels=True).StudyInstanceUID)
    with TestClient(create_app(settings)) as client:
        answer = analyze(client, study_uid)
        assert answer.status_code == 200, answer.text
        summary = answer.json()
        (series,) = summary["series"]
        assert series["pipeline"] == "ct" and series["instances"] == len(blobs)
        assert series["status"] == "analysed" and len(summary["reports"]) == 1

        wait_until(lambda: len(orthanc.instances()) == len(blobs) + 2, timeout_s=60,
                   what="SEG + SR in the PACS")  # fmt: skip
