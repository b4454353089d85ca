"""A CT series posted to /v1/ct: its lesion SEG and SR reach a real Orthanc
(STOW-RS) in the source study, and the FHIR bundle a real FHIR R4 server, through
the outbox; a resend duplicates nothing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from aidx.adapters.dicom_seg import LabelMap
from aidx.inference.settings import Role

from ...conftest import auth
from ...peers import FhirPeer, OrthancPeer
from ...waiting import wait_until
from ..conftest import a_resend_changes_nothing, outbox, writeback_client
from ..dicom.test_seg import ct_series, post_series
from .test_end_to_end import SR_CLASS

pytestmark = pytest.mark.integration
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture()
def client(tmp_path: Path, orthanc: OrthancPeer, fhir_server: FhirPeer) -> Iterator[TestClient]:
    with writeback_client(tmp_path, "ct_pneumonia", orthanc, fhir_server) as test_client:
        yield test_client


def _seg_and_sr_in_the_source_study(
    orthanc: OrthancPeer, blobs: list[bytes]
) -> dict[str, pydicom.Dataset]:
    """Our objects in Orthanc by SOP class, each once, beside the CT in its study."""
    source = pydicom.dcmread(io.BytesIO(blobs[0]), stop_before_pixels=True)
    instances = orthanc.instances()
    assert len(instances) == len(blobs) + 2
    sources = {
        pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True).SOPInstanceUID for b in blobs
    }
    ours = [i for i in instances if i["MainDicomTags"]["SOPInstanceUID"] not in sources]
    objects = {
        (ds := pydicom.dcmread(io.BytesIO(orthanc.file(str(i["ID"]))))).SOPClassUID: ds
        for i in ours
    }
    assert set(objects) == {SR_CLASS, SEG_CLASS}
    studies = httpx.get(f"{orthanc.url}/studies", timeout=30).json()
    assert len(studies) == 1  # one study: the CT, the SEG and the SR
    series = httpx.get(f"{orthanc.url}/studies/{studies[0]}/series", timeout=30).json()
    assert sorted(s["MainDicomTags"]["Modality"] for s in series) == ["CT", "SEG", "SR"]
    for ds in objects.values():
        assert ds.StudyInstanceUID == source.StudyInstanceUID
    return objects


def _seg_is_the_reports_label_map(
    client: TestClient, report_id: str, seg_dataset: pydicom.Dataset
) -> None:
    npz = client.get(
        f"/v1/ct/reports/{report_id}/labelmap.npz", headers=auth(Role.radiologist)
    ).content
    label_map = LabelMap.from_npz(npz)
    seg = hd.seg.Segmentation.from_dataset(seg_dataset)
    pixels = seg.get_pixels_by_source_instance(
        label_map.sop_instance_uids, combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(pixels, label_map.labels)


def test_ct_seg_and_sr_reach_the_pacs_in_the_study_once(
    client: TestClient, orthanc: OrthancPeer, fhir_server: FhirPeer, tmp_path: Path
) -> None:
    blobs = ct_series(tmp_path / "series", seed=11)
    for blob in blobs:  # the PACS holds the study, as it would in a hospital
        httpx.post(f"{orthanc.url}/instances", content=blob, timeout=30).raise_for_status()

    answer = post_series(client, blobs)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["lesions"]
    # Queued before the answer: the build record, from which the worker builds SEG +
    # SR for the PACS and the bundle for the EMR.
    queued = outbox(client)["destinations"]
    assert queued["build"]["pending"] + queued["build"]["delivered"] == 1
    wait_until(
        lambda: (
            (d := outbox(client)["destinations"])["pacs"]["delivered"] == 2
            and d["emr"]["delivered"] == 1
        ),
        what="delivery",
    )

    # A resubmission adds nothing; a forced resend of every entry changes nothing.
    again = post_series(client, blobs[::-1])
    assert again.json()["id"] == report["id"]
    a_resend_changes_nothing(client)

    objects = _seg_and_sr_in_the_source_study(orthanc, blobs)
    # The SEG from Orthanc is the label map the report links to.
    _seg_is_the_reports_label_map(client, report["id"], objects[SEG_CLASS])

    # The EMR: one DiagnosticReport with the CT finding.
    reports = fhir_server.search("DiagnosticReport", identifier=report["id"])
    assert len(reports) == 1
    assert reports[0]["status"] == "preliminary"
