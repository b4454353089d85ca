"""Turnaround of an uploaded slide: its report's turnaround starts when the upload's
request arrived (before the slide was written to disk and its job created), and the
`aidx_turnaround_seconds` histogram counts its analysed stage under `wsi` (the
delivered stages: tests/integrations/dicom/test_wsi_pull.py, with a real PACS)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aidx.service.app import create_app

from .conftest import Slides
from .test_routes import PATHOLOGIST, settings_for, wait_for


def turnaround_counts(client: TestClient) -> dict[tuple[str, str], float]:
    counts = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "aidx_turnaround_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    counts[(sample.labels["pipeline"], sample.labels["stage"])] = sample.value
    return counts


def test_an_uploaded_slide_is_timed_from_its_request_to_analysed(
    slides: Slides, tmp_path: Path
) -> None:
    with TestClient(create_app(settings_for(tmp_path, slides.root))) as client:
        answer = client.post(
            "/v1/wsi/jobs?filename=case.svs",
            headers={**PATHOLOGIST, "Content-Type": "application/octet-stream"},
            content=slides.tumour.read_bytes(),
        )
        assert answer.status_code == 202, answer.text
        done = wait_for(client, answer.json()["id"], {"succeeded", "failed"})
        assert done["state"] == "succeeded", done["error"]
        turnaround = done["report"]["turnaround"]
        received = datetime.fromisoformat(turnaround["received_at"])
        analysed = datetime.fromisoformat(turnaround["analysed_at"])
        assert received <= datetime.fromisoformat(done["created_at"]) <= analysed
        assert turnaround["analysed_s"] == round((analysed - received).total_seconds(), 3)
        # the job's report shows its deliveries too: the PACS here is unreachable. Before
        # the build runs the PACS is listed as pending; after it, not at all, since an
        # uploaded TIFF has no DICOM frame of reference for an ANN (a race: either is right)
        pacs = {d["destination"]: d for d in turnaround["deliveries"]}.get("pacs")
        assert pacs is None or (pacs["state"] != "delivered" and pacs["delivered_at"] is None)
        counts = turnaround_counts(client)
    # (delivered stages depend on the outbox's timing here: test_wsi_pull.py checks them)
    assert counts[("wsi", "analysed")] == 1
