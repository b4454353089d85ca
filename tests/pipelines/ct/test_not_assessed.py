"""A series without lungs is not assessed, never "absent"; every report carries the
CT model's OOD verdict (a head series is out of distribution, the chest phantom in).
Through the pipeline and through POST /v1/ct."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from aidx.inference.assessment import NotAssessedReason, OodStatus
from aidx.inference.cpu_stage import CpuStage
from aidx.inference.reports import ReportStore
from aidx.inference.serving import ModelService
from aidx.inference.settings import Role
from aidx.pipelines.ct.pipeline import CtPipeline
from aidx.pipelines.ct.report import CtReport
from tests.conftest import auth, make_settings
from tests.pipelines.ct.conftest import replicated_series


def analyse(var: Path, blobs: list[bytes]) -> CtReport:
    async def work() -> CtReport:
        settings = make_settings(var, enabled_models=["ct_pneumonia"])
        service = ModelService(settings)
        await service.start()
        cpu = CpuStage(1)
        cpu.start()
        try:
            return await CtPipeline(service, ReportStore(settings.reports_dir), cpu).analyze(blobs)
        finally:
            await cpu.stop()
            await service.stop()

    return asyncio.run(work())


def assert_not_assessed(report: dict) -> None:  # type: ignore[type-arg]
    (finding,) = report["findings"]
    assert finding["assessed"] is False
    assert finding["not_assessed_reason"] == NotAssessedReason.no_lungs
    assert "aerated lung" in finding["not_assessed_message"]
    assert finding["probability"] is None and finding["present"] is None
    assert report["not_assessed"]["reason"] == NotAssessedReason.no_lungs
    assert report["lesions"] == []
    assert {row["side"] for row in report["lungs"]} == {"right", "left"}
    for row in report["lungs"]:
        assert row["assessed"] is False
        assert row["involved_ml"] is None and row["involvement_percent"] is None
        assert row["lung_volume_ml"] < 50.0
    assert report["ood"]["status"] == OodStatus.out_of_distribution
    assert report["ood"]["score"] > report["ood"]["threshold"]


def test_a_head_series_is_not_assessed(head_series: list[bytes], tmp_path: Path) -> None:
    report = analyse(tmp_path, head_series)
    assert_not_assessed(report.model_dump(mode="json"))
    assert report.timings.compute_ms == 0.0 and report.inference_ms == 0.0  # the model never ran
    stored = ReportStore(make_settings(tmp_path).reports_dir)
    labels = np.load(stored.file(report.id, "labelmap.npz"))["labels"]
    assert report.label_map is not None and list(labels.shape) == report.label_map.shape_kji
    assert not labels.any()


def test_the_chest_phantom_is_still_assessed(small_blobs: list[bytes], tmp_path: Path) -> None:
    report = analyse(tmp_path, small_blobs)
    (finding,) = report.findings
    assert finding.assessed and finding.probability is not None and finding.present is not None
    assert report.not_assessed is None
    assert all(row.assessed and row.involvement_percent is not None for row in report.lungs)
    assert report.ood is not None and report.ood.status == OodStatus.in_distribution
    assert report.warnings == []


def post_ct(client: TestClient, blobs: list[bytes]):  # type: ignore[no-untyped-def]
    files = [("files", (f"{n}.dcm", b, "application/dicom")) for n, b in enumerate(blobs)]
    return client.post("/v1/ct", files=files, headers=auth(Role.radiologist))


def test_route_head_series_without_body_part(client: TestClient, head_series: list[bytes]) -> None:
    response = post_ct(client, head_series)
    assert response.status_code == 200, response.text
    report = response.json()
    assert_not_assessed(report)
    headers = auth(Role.radiologist)
    stored = client.get(f"/v1/ct/reports/{report['id']}", headers=headers)
    assert stored.status_code == 200 and stored.json()["findings"] == report["findings"]
    label_map = client.get(report["label_map"]["url"], headers=headers)
    assert label_map.status_code == 200
    assert not np.load(io.BytesIO(label_map.content))["labels"].any()


def test_route_head_series_whose_header_says_chest(client: TestClient) -> None:
    """A wrong header does not buy a lesion statement: the image has no lungs."""
    response = post_ct(client, replicated_series("693_UNCR.dcm", BodyPartExamined="CHEST"))
    assert response.status_code == 200, response.text
    assert_not_assessed(response.json())


def test_route_refuses_a_head_series_naming_its_part(client: TestClient) -> None:
    for name in ("693_UNCR.dcm", "J2K_pixelrep_mismatch.dcm"):
        response = post_ct(client, replicated_series(name, BodyPartExamined="HEAD"))
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "unsupported_body_part"
