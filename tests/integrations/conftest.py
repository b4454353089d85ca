"""Session-wide real peers for the integration tests under tests/integrations/
(Orthanc + DICOMweb, the Medplum-based FHIR R4 server). See tests/peers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from aidx.inference.reports import Report, ReportStore
from aidx.inference.settings import Role
from aidx.pipelines.cxr.evidence import overlay_rgb
from aidx.service.app import create_app

from ..conftest import auth, dicom_bytes, make_settings
from ..peers import FhirPeer, OrthancPeer, missing_peers


def _require_peers() -> None:
    missing = missing_peers()
    if missing:
        pytest.fail(f"real peers are not installed ({', '.join(missing)}): run `make peers`")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    _require_peers()
    peer = OrthancPeer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirPeer]:
    _require_peers()
    peer = FhirPeer(tmp_path_factory.mktemp("fhir")).start()
    try:
        yield peer
    finally:
        peer.stop()


@dataclass(frozen=True)
class AnalysedCxr:
    """A real chest CR from pydicom-data, analysed once by the real demo model."""

    report: Report
    source: bytes
    overlay_rgb: np.ndarray
    var_dir: Path


@pytest.fixture(scope="session")
def analysed_cxr(tmp_path_factory: pytest.TempPathFactory) -> AnalysedCxr:
    var_dir = tmp_path_factory.mktemp("cxr-var")
    data = dicom_bytes("RG1_UNCR.dcm")
    settings = make_settings(var_dir, enabled_models=["cxr_pneumonia"], writeback=False)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/cxr", content=data, headers=cxr_headers())
        assert answer.status_code == 200, answer.text
        report = Report.model_validate(answer.json())
    overlay = overlay_rgb(ReportStore(var_dir / "reports"), report.id)
    return AnalysedCxr(report, data, overlay, var_dir)


def cxr_headers() -> dict[str, str]:
    return {**auth(Role.radiologist), "Content-Type": "application/dicom"}
