"""A whole slide stored as DICOM WSI gets its suggested regions back into its own
study as one Microscopy Bulk Simple Annotations object, through the outbox to a real
Orthanc, exactly once however often it is analysed or resent; the ANN passes
dciodvfy and reads back with highdicom to the report's polygons. A TIFF/SVS slide has
no image in the PACS: its report goes to the EMR only."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from aidx.adapters.dicom_ann import build_ann, slide_source_header
from aidx.adapters.writeback import PACS
from aidx.inference.assessment import NotAssessed, NotAssessedReason
from aidx.inference.reports import Coding, Finding, ModelRef, Region, Report, SourceRef, Timings
from aidx.inference.settings import Role
from aidx.integrations.dicom.uids import derived_uid

from ...conftest import auth
from ...peers import FhirPeer, OrthancPeer
from ...waiting import wait_until
from ..conftest import outbox, outbox_drained, writeback_client
from .dicom_slides import PATIENT_ID, DicomSlide, make_dicom_slide
from .test_writers import dciodvfy

pytestmark = pytest.mark.integration
ANN_CLASS = "1.2.840.10008.5.1.4.1.1.91.1"
PATHOLOGIST = auth(Role.pathologist)


@pytest.fixture(scope="module")
def dicom_slide(tmp_path_factory: pytest.TempPathFactory) -> DicomSlide:
    return make_dicom_slide(tmp_path_factory.mktemp("dicom-slides"))


@pytest.fixture()
def client(
    tmp_path: Path, orthanc: OrthancPeer, fhir_server: FhirPeer, dicom_slide: DicomSlide
) -> Iterator[TestClient]:
    with writeback_client(
        tmp_path, "wsi_tiles", orthanc, fhir_server, wsi_slide_roots=[dicom_slide.root]
    ) as test_client:
        yield test_client


def _analyse(client: TestClient, slide_path: str) -> dict[str, Any]:
    """The report of a whole-slide job, once its objects have all been delivered."""
    accepted = client.post("/v1/wsi/jobs", headers=PATHOLOGIST, json={"slide_path": slide_path})
    assert accepted.status_code == 202, accepted.text
    url = f"/v1/wsi/jobs/{accepted.json()['id']}"
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


def _store_slide(orthanc: OrthancPeer, slide: DicomSlide) -> None:
    for path in slide.instances:
        httpx.post(f"{orthanc.url}/instances", content=path.read_bytes()).raise_for_status()


def _anns(orthanc: OrthancPeer) -> list[pydicom.Dataset]:
    found = [pydicom.dcmread(io.BytesIO(orthanc.file(str(i["ID"])))) for i in orthanc.instances()]
    return [ds for ds in found if ds.SOPClassUID == ANN_CLASS]


def _open_ring(polygon: list[list[float]]) -> np.ndarray:
    points = np.asarray(polygon, dtype=np.float64)
    return points[:-1] if np.array_equal(points[0], points[-1]) else points


def _assert_same_polygons(ann: pydicom.Dataset, level0: pydicom.Dataset, regions: list) -> None:
    """The ANN's polygons, mapped back to level-0 pixels, are the report's (1 px)."""
    group = hd.ann.MicroscopyBulkSimpleAnnotations.from_dataset(ann).get_annotation_groups()[0]
    coordinates = group.get_graphic_data(hd.ann.AnnotationCoordinateTypeValues.SCOORD3D)
    to_pixels = hd.spatial.ReferenceToImageTransformer.for_image(
        level0, for_total_pixel_matrix=True
    )
    assert len(coordinates) == len(regions)
    for points, region in zip(coordinates, regions, strict=True):
        expected = _open_ring(region["polygon_px"])
        assert np.abs(to_pixels(points)[:, :2] - expected).max() <= 1.0
    names, values, units = group.get_measurements()
    assert [n.value for n in names] == ["122157", "42798000"]  # Probability, Area
    assert [u.value for u in units] == ["1", "mm2"]
    np.testing.assert_allclose(values[:, 0], [r["score"] for r in regions], atol=1e-6)
    np.testing.assert_allclose(values[:, 1], [r["area_mm2"] for r in regions], rtol=1e-6)


def test_regions_come_back_to_the_slides_study_once(
    client: TestClient,
    orthanc: OrthancPeer,
    fhir_server: FhirPeer,
    dicom_slide: DicomSlide,
    tmp_path: Path,
) -> None:
    _store_slide(orthanc, dicom_slide)
    level0 = dicom_slide.level0
    report = _analyse(client, f"dicom/{dicom_slide.instances[-1].name}")  # any instance
    regions = report["findings"][0]["regions"]
    assert regions, "the planted suspicious area gives a region"
    (ann,) = _anns(orthanc)
    assert ann.SOPInstanceUID == derived_uid("ann", report["id"])
    assert ann.StudyInstanceUID == level0.StudyInstanceUID  # into the slide's study
    assert ann.SeriesInstanceUID != level0.SeriesInstanceUID  # as a new series
    assert ann.PatientID == PATIENT_ID and ann.Modality == "ANN"
    assert ann.FrameOfReferenceUID == level0.FrameOfReferenceUID
    assert ann.ReferencedImageSequence[0].ReferencedSOPInstanceUID == level0.SOPInstanceUID
    group = ann.AnnotationGroupSequence[0]
    assert group.GraphicType == "POLYGON" and group.AnnotationGroupGenerationType == "AUTOMATIC"
    assert group.AnnotationPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert group.AnnotationPropertyTypeCodeSequence[0].CodeValue == "108369006"
    algorithm = group.AnnotationGroupAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("wsi_tiles", "1")
    path = tmp_path / "ann.dcm"
    path.write_bytes(orthanc.file(_ann_id(orthanc)))
    dciodvfy(path)
    _assert_same_polygons(ann, level0, regions)

    # the EMR: one pathology DiagnosticReport for the slide's patient, with the regions
    (patient,) = fhir_server.search("Patient", identifier=f"urn:aidx:patient-id|{PATIENT_ID}")
    (diagnostic,) = fhir_server.search("DiagnosticReport", subject=f"Patient/{patient['id']}")
    assert diagnostic["category"][0]["coding"][0]["code"] == "SP"
    assert f"{len(regions)} suspicious region(s)" in diagnostic["conclusion"]

    # analysed again, then every entry resent: nothing new anywhere
    assert _analyse(client, f"dicom/{dicom_slide.instances[0].name}")["id"] == report["id"]
    writeback = client.app.state.services.writeback  # type: ignore[attr-defined]
    for entry in writeback.store.list():
        writeback.worker.destinations[entry.destination].deliver(entry)
    wait_until(lambda: outbox_drained(client), what="the outbox to drain")
    assert len(_anns(orthanc)) == 1
    assert len(orthanc.instances()) == len(dicom_slide.instances) + 1
    assert len(fhir_server.search("DiagnosticReport", subject=f"Patient/{patient['id']}")) == 1
    delivered = {k: d["delivered"] for k, d in outbox(client)["destinations"].items()}
    assert delivered["build"] == 1 and delivered[PACS] == 1


def _ann_id(orthanc: OrthancPeer) -> str:
    for instance in orthanc.instances():
        ds = pydicom.dcmread(io.BytesIO(orthanc.file(str(instance["ID"]))), stop_before_pixels=True)
        if ds.SOPClassUID == ANN_CLASS:
            return str(instance["ID"])
    raise AssertionError("no ANN in Orthanc")


def test_a_tiff_slide_goes_to_the_emr_only_with_the_same_regions(
    client: TestClient, orthanc: OrthancPeer, dicom_slide: DicomSlide
) -> None:
    as_svs = _analyse(client, dicom_slide.svs.name)
    as_dicom = _analyse(client, f"dicom/{dicom_slide.instances[0].name}")
    writeback = client.app.state.services.writeback  # type: ignore[attr-defined]
    svs_entries = [e for e in writeback.store.list() if e.report_id == as_svs["id"]]
    assert {e.destination for e in svs_entries} == {"build", "emr"}  # no PACS object
    # the same slide read as SVS and as DICOM WSI: the same regions
    svs_regions = as_svs["findings"][0]["regions"]
    dicom_regions = as_dicom["findings"][0]["regions"]
    assert len(svs_regions) == len(dicom_regions) >= 1
    for a, b in zip(svs_regions, dicom_regions, strict=True):
        assert a["polygon_px"] == b["polygon_px"]
        assert a["score"] == pytest.approx(b["score"], abs=0.02)


# --- the builder alone ---------------------------------------------------------------

NEOPLASM = Coding(scheme="SCT", code="108369006", meaning="Neoplasm")


def _report(finding: Finding) -> Report:
    return Report(
        id="wsi-test",
        pipeline="wsi",
        source=SourceRef(modality="SM"),
        model=ModelRef(name="wsi_tiles", version=1, sha256="ab" * 32, demo_weights=True),
        findings=[finding],
        timings=Timings(),
    )


def _region(rank: int, x: float) -> Region:
    ring = [[x, 100.0], [x + 512, 100.0], [x + 512, 612.0], [x, 612.0], [x, 100.0]]
    return Region(
        x_min_px=x, y_min_px=100, x_max_px=x + 512, y_max_px=612, peak_x_px=x + 256,
        peak_y_px=356, peak_heat=0.9, polygon_px=ring, score=0.9 - rank / 10,
        area_mm2=0.0655, rank=rank,
    )  # fmt: skip


def test_no_region_or_not_assessed_gives_no_ann(dicom_slide: DicomSlide) -> None:
    level0 = dicom_slide.level0
    none_found = Finding(concept=NEOPLASM, probability=0.1, threshold=0.34, present=False)
    why = NotAssessed(reason=NotAssessedReason.no_tissue, message="no tissue")
    not_assessed = Finding.not_assessed(NEOPLASM, 0.34, why)
    assert build_ann(_report(none_found), level0) is None
    assert build_ann(_report(not_assessed), level0) is None


def test_the_ann_is_the_same_instance_when_rebuilt(dicom_slide: DicomSlide) -> None:
    found = Finding(
        concept=NEOPLASM, probability=0.9, threshold=0.34, present=True,
        regions=[_region(1, 200.0), _region(2, 1200.0)],
    )  # fmt: skip
    first = build_ann(_report(found), dicom_slide.level0)
    again = build_ann(_report(found), dicom_slide.level0)
    assert first is not None and again is not None
    assert first.SOPInstanceUID == again.SOPInstanceUID == derived_uid("ann", "wsi-test")
    assert first.SeriesInstanceUID == again.SeriesInstanceUID
    regions = [r.model_dump() for r in found.regions]
    _assert_same_polygons(first, dicom_slide.level0, regions)


def test_the_source_is_the_level0_volume_of_a_dicom_slide_and_none_for_a_tiff(
    dicom_slide: DicomSlide,
) -> None:
    for given in dicom_slide.instances:  # whichever instance OpenSlide was given
        header = slide_source_header(given)
        assert header is not None
        assert header.SOPInstanceUID == dicom_slide.level0.SOPInstanceUID
    assert slide_source_header(dicom_slide.svs) is None
