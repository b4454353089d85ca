"""Session-wide real peers for the integration tests under tests/integrations/
(Orthanc + DICOMweb, the Medplum-based FHIR R4 server). See tests/peers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
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


@contextmanager
def writeback_client(
    var_dir: Path, model: str, orthanc: OrthancPeer, fhir_server: FhirPeer, **extra: object
) -> Iterator[TestClient]:
    """aidx with `model`, writing back to the real Orthanc (emptied first) and FHIR
    server through an outbox that polls and backs off in fractions of a second;
    `extra`: further settings."""
    orthanc.clear()
    settings = make_settings(
        var_dir, enabled_models=[model],
        pacs_dicomweb_url=orthanc.dicomweb, fhir_base_url=fhir_server.base_url,
        outbox_poll_s=0.05, outbox_backoff_base_s=0.1, outbox_backoff_max_s=0.5, **extra,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def outbox(client: httpx.Client) -> dict[str, Any]:
    """GET /v1/outbox (of a TestClient or a real server), with zero counts for a
    destination that has no entry yet (the worker builds a report's objects after the
    answer)."""
    answer = client.get("/v1/outbox", headers=auth(Role.engineer))
    assert answer.status_code == 200, answer.text
    state = dict(answer.json())
    for name in ("build", "pacs", "emr", "hl7"):
        state["destinations"].setdefault(name, {"pending": 0, "delivered": 0, "failed": 0})
    return state


def outbox_drained(client: httpx.Client) -> dict[str, Any] | None:
    """The outbox once nothing is pending at any destination, else None: what a request
    queued (before its answer) has all been tried, and what a build made from it too."""
    state = outbox(client)
    return state if all(d["pending"] == 0 for d in state["destinations"].values()) else None


def a_resend_changes_nothing(client: TestClient) -> None:
    """Once a report is delivered: each destination has its one delivery, and a forced
    resend of every entry, the build too (rebuilding queues nothing new), adds none."""
    delivered = {k: d["delivered"] for k, d in outbox(client)["destinations"].items()}
    assert delivered == {"build": 1, "pacs": 2, "emr": 1, "hl7": 0}
    writeback = client.app.state.services.writeback  # type: ignore[attr-defined]
    for entry in writeback.store.list():
        writeback.worker.destinations[entry.destination].deliver(entry)
    assert len(writeback.store.list()) == 4
