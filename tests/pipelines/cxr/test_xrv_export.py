"""A torchxrayvision DenseNet drops into the repository and serves through the pipeline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aidx.inference.cpu_stage import CpuStage
from aidx.inference.reports import ReportStore
from aidx.inference.repository import load_entry
from aidx.inference.serving import ModelService
from aidx.pipelines.cxr.pipeline import CxrPipeline
from aidx.pipelines.cxr.xrv_export import XRV_LABELS, export_xrv
from tests.conftest import dicom_bytes, make_settings

pytest.importorskip("torchxrayvision")  # the optional extra; `make test` installs it


@pytest.mark.slow
def test_an_exported_densenet_serves_the_cxr_pipeline(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    export_xrv(repo / "xrv_densenet")
    entry = load_entry(repo / "xrv_densenet")
    assert entry.problem is None and entry.checks == {"sha256": True}
    assert entry.card is not None and "UNTRAINED" in entry.card.text

    async def run() -> list:
        service = ModelService(make_settings(tmp_path, model_repository=repo))
        await service.start()
        report = await CxrPipeline(service, ReportStore(tmp_path / "r"), CpuStage(1)).analyze(
            dicom_bytes("RG1_UNCR.dcm")
        )
        await service.stop()
        return report.findings

    found = asyncio.run(run())
    assert [f.concept.meaning for f in found] == [name for name, _, _ in XRV_LABELS]
    assert all(0 <= f.probability <= 1 and not f.regions for f in found)
