"""Pathology in the PACS: a synthetic slide dicomized (wsidicomizer) into a real
Orthanc is pulled by its Study and Series Instance UIDs over DICOMweb (POST
/v1/wsi/dicom), or C-STOREd to aidx's SCP, read by OpenSlide, and its regions come
back into its study as one ANN series, exactly once however often it is analysed, the
same regions as the same slide read as SVS. What is not a readable whole slide is
refused with a code before any job."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from aidx.inference.settings import Role
from aidx.integrations.dicom.uids import derived_uid

from ...conftest import auth, dicom_bytes, free_port
from ...peers import FhirPeer, OrthancPeer
from ...pipelines.wsi.test_turnaround import turnaround_counts
from ...waiting import wait_until
from ..conftest import outbox_drained, writeback_client
from .dicom_slides import DicomSlide, make_dicom_slide
from .test_ann import PATHOLOGIST, _analyse, _anns, _assert_same_polygons

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dicom_slide(tmp_path_factory: pytest.TempPathFactory) -> DicomSlide:
    # a pyramid of three levels (3072, 1536, 768 px wide): every instance is pulled
    return make_dicom_slide(
        tmp_path_factory.mktemp("pulled-slides"), levels=3, patient_id="WSI-PULL-0001"
    )


def _store(orthanc: OrthancPeer, paths: list[Path]) -> list[str]:
    return [
        httpx.post(f"{orthanc.url}/instances", content=p.read_bytes(), timeout=60).json()["ID"]
        for p in paths
    ]


def _uids(slide: DicomSlide) -> dict[str, str]:
    level0 = slide.level0
    return {"study_uid": level0.StudyInstanceUID, "series_uid": level0.SeriesInstanceUID}


def _pull(client: TestClient, uids: dict[str, str]) -> dict[str, Any]:
    """The report of a pulled slide's job, once its objects have all been delivered."""
    accepted = client.post("/v1/wsi/dicom", headers=PATHOLOGIST, json=uids)
    assert accepted.status_code == 202, accepted.text
    slide = accepted.json()["slide"]
    assert slide["vendor"] == "dicom" and slide["levels"] == 3
    url = accepted.headers["Location"]
    job = wait_until(
        lambda: (
            (j := client.get(url, headers=PATHOLOGIST).json())["state"] in ("succeeded", "failed")
            and j
        ),
        what="the job",
        timeout_s=120,
    )
    assert job["state"] == "succeeded", job["error"]
    wait_until(lambda: outbox_drained(client), what="the outbox to drain")
    return dict(job["report"])


def _assert_timed_to_every_destination(
    client: TestClient, report_id: str, *, after: datetime
) -> dict[str, Any]:
    """The report's turnaround runs from its receipt (not before `after`) through
    analysed to delivered at the PACS (the ANN) and FHIR, each counted once on
    /metrics under `wsi`; its turnaround block is returned."""
    answer = client.get(f"/v1/reports/{report_id}", headers=auth(Role.pathologist))
    turnaround = answer.json()["turnaround"]
    received = datetime.fromisoformat(turnaround["received_at"])
    assert after <= received <= datetime.fromisoformat(turnaround["analysed_at"])
    deliveries = {d["destination"]: d for d in turnaround["deliveries"]}
    assert {name: d["state"] for name, d in deliveries.items()} == {
        "pacs": "delivered",
        "fhir": "delivered",
    }
    assert all(d["seconds"] >= turnaround["analysed_s"] for d in deliveries.values())
    counts = wait_until(
        lambda: (c := turnaround_counts(client)).get(("wsi", "delivered_fhir")) and c,
        what="the delivered stages on /metrics",
    )
    assert counts[("wsi", "analysed")] == 1
    assert counts[("wsi", "delivered_pacs")] == counts[("wsi", "delivered_fhir")] == 1
    return dict(turnaround)


def _no_pulled_copies(var_dir: Path) -> bool:
    return not any((var_dir / "wsi" / "dicom").rglob("*.dcm"))


def test_a_slide_in_the_pacs_gets_its_regions_back_once_as_read_from_the_tiff(
    tmp_path: Path, orthanc: OrthancPeer, fhir_server: FhirPeer, dicom_slide: DicomSlide
) -> None:
    with writeback_client(
        tmp_path, "wsi_tiles", orthanc, fhir_server, wsi_slide_roots=[dicom_slide.root]
    ) as client:
        _store(orthanc, dicom_slide.instances)
        asked = datetime.now(UTC)
        report = _pull(client, _uids(dicom_slide))
        _assert_timed_to_every_destination(client, report["id"], after=asked)
        regions = report["findings"][0]["regions"]
        assert regions, "the planted suspicious area gives a region"
        (ann,) = _anns(orthanc)
        level0 = dicom_slide.level0
        assert ann.SOPInstanceUID == derived_uid("ann", report["id"])
        assert ann.StudyInstanceUID == level0.StudyInstanceUID
        assert ann.ReferencedImageSequence[0].ReferencedSOPInstanceUID == level0.SOPInstanceUID
        _assert_same_polygons(ann, level0, regions)
        assert _no_pulled_copies(tmp_path)  # the pulled series went with its job

        again = _pull(client, _uids(dicom_slide))  # pulled again: the same report, no new ANN
        assert again["id"] == report["id"]
        assert len(_anns(orthanc)) == 1
        assert len(orthanc.instances()) == len(dicom_slide.instances) + 1

        as_tiff = _analyse(client, dicom_slide.svs.name)  # the same slide, as SVS
    tiff_regions = as_tiff["findings"][0]["regions"]
    assert len(tiff_regions) == len(regions) >= 1
    for a, b in zip(tiff_regions, regions, strict=True):
        assert a["polygon_px"] == b["polygon_px"]
        assert a["score"] == pytest.approx(b["score"], abs=0.02)


def _variant(
    slide: DicomSlide, folder: Path, change: Callable[[pydicom.Dataset], None], copies: int = 1
) -> list[Path]:
    """`copies` copies of the slide's instances as a new series (new UIDs), each changed."""
    folder.mkdir()
    series, mapping = generate_uid(), {}
    out = []
    for path in slide.instances * copies:
        ds = pydicom.dcmread(path)
        mapping[ds.SOPInstanceUID] = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series
        change(ds)
        out.append(folder / f"{ds.SOPInstanceUID}.dcm")
        ds.save_as(out[-1])
    return out


def _no_image_type(ds: pydicom.Dataset) -> None:
    del ds.ImageType  # as orthanc-wsi 1.1's dicomizer writes it


def _no_spacing(ds: pydicom.Dataset) -> None:
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing


def _refused(client: TestClient, uids: dict[str, str], status: int, code: str) -> None:
    answer = client.post("/v1/wsi/dicom", headers=PATHOLOGIST, json=uids)
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code


def test_what_is_not_a_readable_whole_slide_is_refused_with_a_code(
    tmp_path: Path, orthanc: OrthancPeer, fhir_server: FhirPeer, dicom_slide: DicomSlide
) -> None:
    var = tmp_path / "var"
    with writeback_client(var, "wsi_tiles", orthanc, fhir_server) as client:
        cr = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")), stop_before_pixels=True)
        httpx.post(f"{orthanc.url}/instances", content=dicom_bytes("RG1_UNCR.dcm"), timeout=30)
        uids = {"study_uid": cr.StudyInstanceUID, "series_uid": cr.SeriesInstanceUID}
        _refused(client, uids, 422, "not_a_wsi")
        _refused(client, {**uids, "series_uid": "1.2.3.4"}, 404, "series_not_found")
        _refused(client, {**uids, "series_uid": "1.2.x"}, 400, "invalid_series_uid")
        for name, change, code in (
            ("no-type", _no_image_type, "dicom_wsi_no_image_type"),
            ("no-spacing", _no_spacing, "missing_mpp"),
        ):
            changed = _variant(dicom_slide, tmp_path / name, change)
            _store(orthanc, changed)
            level0 = pydicom.dcmread(changed[0], stop_before_pixels=True)
            ids = {"study_uid": level0.StudyInstanceUID, "series_uid": level0.SeriesInstanceUID}
            _refused(client, ids, 422, code)
    twice = _variant(dicom_slide, tmp_path / "twice", lambda ds: None, copies=2)
    for limits, code in (
        ({"wsi_dicom_max_instances": 1}, "too_many_instances"),
        ({"wsi_dicom_max_bytes": 100_000}, "slide_too_large"),
    ):
        with writeback_client(tmp_path / code, "wsi_tiles", orthanc, fhir_server, **limits) as c:
            _store(orthanc, twice)
            level0 = pydicom.dcmread(twice[0], stop_before_pixels=True)
            ids = {"study_uid": level0.StudyInstanceUID, "series_uid": level0.SeriesInstanceUID}
            _refused(c, ids, 413, code)
            assert not c.get("/v1/wsi/jobs", headers=PATHOLOGIST).json()  # no job
        assert _no_pulled_copies(tmp_path / code)  # what was pulled before the limit: gone


def test_a_slide_cstored_to_aidx_is_analysed_as_a_series_and_its_ann_comes_back(
    tmp_path: Path, orthanc: OrthancPeer, fhir_server: FhirPeer, dicom_slide: DicomSlide
) -> None:
    port = free_port()
    with writeback_client(
        tmp_path, "wsi_tiles", orthanc, fhir_server, dicom_scp_port=port, dicom_stable_s=1.0
    ) as client:
        ids = _store(orthanc, dicom_slide.instances)
        modality = {"AET": "AIDX", "Host": "127.0.0.1", "Port": port}
        assert httpx.put(f"{orthanc.url}/modalities/AIDX", json=modality).is_success
        sent_at = datetime.now(UTC)
        sent = httpx.post(f"{orthanc.url}/modalities/AIDX/store", json=ids, timeout=120)
        assert sent.is_success, sent.text
        (ann,) = wait_until(lambda: _anns(orthanc), timeout_s=120, what="the ANN")
        (job,) = client.get("/v1/wsi/jobs", headers=PATHOLOGIST).json()
        assert job["state"] == "succeeded" and job["slide"]["vendor"] == "dicom"
        report = client.get(job["links"]["self"], headers=PATHOLOGIST).json()["report"]
        assert ann.SOPInstanceUID == derived_uid("ann", report["id"])
        _assert_same_polygons(ann, dicom_slide.level0, report["findings"][0]["regions"])
        wait_until(lambda: outbox_drained(client), what="the outbox to drain")
        # timed from the first instance's arrival, not from the job (made once the
        # series had been stable for dicom_stable_s)
        turnaround = _assert_timed_to_every_destination(client, report["id"], after=sent_at)
        waited = datetime.fromisoformat(job["created_at"]) - datetime.fromisoformat(
            turnaround["received_at"]
        )
        assert waited.total_seconds() >= 1.0
    assert not any((tmp_path / "incoming").rglob("*.dcm"))
    assert not list((tmp_path / "quarantine").rglob("*.reason.txt"))
    assert _no_pulled_copies(tmp_path)
