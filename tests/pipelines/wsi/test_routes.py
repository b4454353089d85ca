"""/v1/wsi/jobs through the real app: submit, follow, cancel, fetch results; every
bad input gets a clear 4xx; a restart leaves no job "running"."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aidx.inference.settings import Role
from aidx.inference.store import create_store, init_store
from aidx.pipelines.wsi.job_store import JobStore
from aidx.service.app import create_app
from tests.conftest import auth, make_settings

from .conftest import Slides
from .test_regions import assert_qupath_geojson

PATHOLOGIST = auth(Role.pathologist)


def settings_for(var_dir: Path, slides_root: Path, **extra: object):  # type: ignore[no-untyped-def]
    return make_settings(
        var_dir,
        enabled_models=["wsi_tiles"],
        wsi_slide_roots=[slides_root],
        wsi_max_upload_bytes=20 * 1024 * 1024,
        **extra,
    )


@pytest.fixture(scope="module")
def api(slides: Slides, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    var_dir = tmp_path_factory.mktemp("wsi-var")
    with TestClient(create_app(settings_for(var_dir, slides.root))) as client:
        yield client


def wait_for(client: TestClient, job_id: str, states: set[str], timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/wsi/jobs/{job_id}", headers=PATHOLOGIST).json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job stayed {job['state']}")


def submit(client: TestClient, slide_path: str, **extra: object):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/wsi/jobs", headers=PATHOLOGIST, json={"slide_path": slide_path, **extra}
    )


def test_a_job_runs_to_a_report_with_regions_geojson_and_heatmap(api: TestClient) -> None:
    response = submit(api, "tumour.svs")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] in ("queued", "running")
    assert response.headers["location"] == f"/v1/wsi/jobs/{job['id']}"
    assert job["slide"]["mpp_x"] == 0.5 and "path" not in json.dumps(job["slide"])
    done = wait_for(api, job["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done["error"]
    progress = done["progress"]
    assert progress["tiles_done"] == progress["tiles_total"] > 0 and progress["fraction"] == 1
    report = done["report"]
    regions = report["findings"][0]["regions"]
    assert report["pipeline"] == "wsi" and len(regions) >= 2
    assert all(r["polygon_px"] and r["area_mm2"] > 0 for r in regions)
    geo = api.get(done["links"]["geojson"], headers=PATHOLOGIST)
    assert geo.status_code == 200 and geo.headers["content-type"] == "application/geo+json"
    assert_qupath_geojson(geo.json())
    assert len(geo.json()["features"]) == len(regions)
    heatmap = api.get(done["links"]["heatmap"], headers=PATHOLOGIST)
    assert heatmap.status_code == 200 and heatmap.content.startswith(b"\x89PNG")
    # the same report through the generic report routes
    assert api.get(f"/v1/reports/{report['id']}", headers=PATHOLOGIST).status_code == 200
    listed = api.get("/v1/wsi/jobs", headers=PATHOLOGIST).json()
    assert job["id"] in [j["id"] for j in listed]


def test_an_upload_is_streamed_to_disk_and_analysed(api: TestClient, slides: Slides) -> None:
    response = api.post(
        "/v1/wsi/jobs?filename=case.svs",
        headers={**PATHOLOGIST, "Content-Type": "application/octet-stream"},
        content=slides.tumour.read_bytes(),
    )
    assert response.status_code == 202, response.text
    done = wait_for(api, response.json()["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded"


def test_an_upload_needs_mpp_when_the_slide_has_none(api: TestClient, slides: Slides) -> None:
    headers = {**PATHOLOGIST, "Content-Type": "image/tiff"}
    data = slides.no_mpp.read_bytes()
    refused = api.post("/v1/wsi/jobs?filename=x.tiff", headers=headers, content=data)
    assert refused.status_code == 422 and refused.json()["code"] == "missing_mpp"
    accepted = api.post("/v1/wsi/jobs?filename=x.tiff&mpp=0.5", headers=headers, content=data)
    assert accepted.status_code == 202
    assert accepted.json()["slide"]["mpp_source"] == "request"


def test_an_upload_over_the_limit_is_refused(api: TestClient) -> None:
    response = api.post(
        "/v1/wsi/jobs?filename=big.svs",
        headers={**PATHOLOGIST, "Content-Type": "application/octet-stream"},
        content=b"\0" * (20 * 1024 * 1024 + 1),
    )
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("truncated.svs", 422, "unsupported_slide_format"),
        ("notes.txt", 422, "unsupported_slide_format"),
        ("missing.svs", 404, "slide_not_found"),
        ("../outside.svs", 403, "slide_path_forbidden"),
        ("/etc/hostname", 403, "slide_path_forbidden"),
        ("escape.svs", 403, "slide_path_forbidden"),  # a link out of the root
        ("no_mpp.tiff", 422, "missing_mpp"),
    ],
)
def test_bad_slides_get_clear_errors(
    api: TestClient, slides: Slides, path: str, status: int, code: str
) -> None:
    outside = slides.root.parent / "outside.svs"
    outside.write_bytes(slides.tumour.read_bytes())
    link = slides.root / "escape.svs"
    if not link.is_symlink():
        os.symlink(outside, link)
    response = submit(api, path)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_bad_requests(api: TestClient) -> None:
    assert submit(api, "tumour.svs", mpp=-1).status_code == 400
    wrong_type = api.post(
        "/v1/wsi/jobs", headers={**PATHOLOGIST, "Content-Type": "text/plain"}, content=b"x"
    )
    assert wrong_type.status_code == 415
    bad_name = api.post(
        "/v1/wsi/jobs?filename=evil.exe",
        headers={**PATHOLOGIST, "Content-Type": "application/octet-stream"},
        content=b"x",
    )
    assert bad_name.status_code == 400 and bad_name.json()["code"] == "invalid_filename"
    assert api.get("/v1/wsi/jobs/not-a-uuid", headers=PATHOLOGIST).status_code == 404


def test_only_pathologists_and_admins(api: TestClient) -> None:
    response = api.post(
        "/v1/wsi/jobs", headers=auth(Role.radiologist), json={"slide_path": "tumour.svs"}
    )
    assert response.status_code == 403
    assert api.get("/v1/wsi/jobs").status_code == 401


def test_a_running_job_can_be_cancelled(slides: Slides, big_slide: Path, tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "var", big_slide.parent, wsi_readers=1)
    with TestClient(create_app(settings)) as client:
        job = submit(client, big_slide.name).json()
        running = wait_for(client, job["id"], {"running"})
        deadline = time.monotonic() + 30
        while running["progress"]["tiles_done"] == 0 and time.monotonic() < deadline:
            running = client.get(f"/v1/wsi/jobs/{job['id']}", headers=PATHOLOGIST).json()
        cancelled = client.post(f"/v1/wsi/jobs/{job['id']}/cancel", headers=PATHOLOGIST)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        time.sleep(0.5)
        after = client.get(f"/v1/wsi/jobs/{job['id']}", headers=PATHOLOGIST).json()
        assert after["state"] == "cancelled" and after["error"]["code"] == "cancelled"
        assert after["progress"]["tiles_done"] < after["progress"]["tiles_total"]
        results = client.get(f"/v1/wsi/jobs/{job['id']}/regions.geojson", headers=PATHOLOGIST)
        assert results.status_code == 404 and results.json()["code"] == "job_not_finished"


def test_a_restart_marks_unfinished_jobs_failed(big_slide: Path, tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    settings = settings_for(var_dir, big_slide.parent, wsi_readers=1)
    with TestClient(create_app(settings)) as client:
        job = submit(client, big_slide.name).json()
        wait_for(client, job["id"], {"running"})
    # the service stopped mid-job; a process that died would leave it "running":
    engine = create_store(settings.store_url)
    init_store(engine)
    store = JobStore(engine)
    ghost = store.create(
        slide_path=big_slide, uploaded=False, mpp=None, slide={}, params={}, submitted_by="t"
    )
    # ... by a replica that died a minute ago: its heartbeat stopped then.
    store.update(ghost.id, state="running", heartbeat_at=datetime.now(UTC) - timedelta(minutes=1))
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        for job_id in (job["id"], ghost.id):
            seen = client.get(f"/v1/wsi/jobs/{job_id}", headers=PATHOLOGIST).json()
            assert seen["state"] == "failed" and seen["error"]["code"] == "interrupted"


def test_a_slide_without_tissue_is_an_answer_not_assessed(
    api: TestClient, marked_slides: object
) -> None:
    for slide in ("blank.tiff", "ink_only.svs"):
        response = submit(api, slide)
        assert response.status_code == 202, response.text
        done = wait_for(api, response.json()["id"], {"succeeded", "failed"})
        assert done["state"] == "succeeded", done["error"]  # an answer, not a failure
        report = done["report"]
        finding = report["findings"][0]
        assert finding["assessed"] is False and finding["not_assessed_reason"] == "no_tissue"
        assert finding["probability"] is None and finding["present"] is None
        assert report["not_assessed"]["reason"] == "no_tissue"
        assert report["ood"]["status"] == "out_of_distribution" and report["ood"]["score"] is None
        geo = api.get(done["links"]["geojson"], headers=PATHOLOGIST)
        assert geo.json() == {"type": "FeatureCollection", "features": []}
        heatmap = api.get(done["links"]["heatmap"], headers=PATHOLOGIST)
        assert heatmap.status_code == 200 and heatmap.content.startswith(b"\x89PNG")


def test_a_request_mpp_contradicting_the_slide_is_refused_unless_overridden(
    api: TestClient, slides: Slides
) -> None:
    refused = submit(api, "tumour.svs", mpp=0.4)
    assert refused.status_code == 422 and refused.json()["code"] == "mpp_mismatch"
    message = refused.json()["message"]
    assert "0.4 um/px" in message and "0.5 um/px" in message and "mpp_override" in message
    upload = api.post(
        "/v1/wsi/jobs?filename=x.svs&mpp=0.4",
        headers={**PATHOLOGIST, "Content-Type": "image/tiff"},
        content=slides.tumour.read_bytes(),
    )
    assert upload.status_code == 422 and upload.json()["code"] == "mpp_mismatch"
    assert submit(api, "tumour.svs", mpp=0.52).status_code == 202  # within 10%: as before
    accepted = submit(api, "tumour.svs", mpp=0.4, mpp_override=True)
    assert accepted.status_code == 202, accepted.text
    done = wait_for(api, accepted.json()["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done["error"]
    warned = [w for w in done["report"]["warnings"] if "mpp_override" in w]
    assert len(warned) == 1 and "0.4 um/px" in warned[0] and "0.5 um/px" in warned[0]
