"""Whole slides under issue 12: an uploaded slide's retention, a report id per
analysis (other parameters never overwrite an earlier job's results), every slide
root tried, and a slide's report read by pathologists only."""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aidx.inference.errors import Forbidden, NotFound
from aidx.inference.settings import Role
from aidx.pipelines.wsi.intake import resolve_slide_path
from aidx.service.app import create_app
from tests.conftest import auth, make_settings

from .conftest import Slides
from .test_routes import PATHOLOGIST, settings_for, submit, wait_for

UPLOAD = {**PATHOLOGIST, "Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def two_roots(slides: Slides, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """An empty first root, and a second that holds a copy of the tumour slide."""
    first, second = tmp_path_factory.mktemp("root-a"), tmp_path_factory.mktemp("root-b")
    (second / "cases").mkdir()
    shutil.copy(slides.tumour, second / "cases" / "tumour-b.svs")
    return [first, second]


@pytest.fixture(scope="module")
def api(
    slides: Slides, two_roots: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    var_dir = tmp_path_factory.mktemp("wsi-access")
    settings = make_settings(
        var_dir,
        enabled_models=["wsi_tiles"],
        wsi_slide_roots=[slides.root, *two_roots],
        wsi_max_upload_bytes=20 * 1024 * 1024,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _uploads(client: TestClient) -> Path:
    return Path(client.app.state.services.settings.var_dir) / "wsi" / "uploads"


def test_an_upload_is_deleted_when_its_job_ends_and_its_results_stay(
    api: TestClient, slides: Slides
) -> None:
    job = api.post(
        "/v1/wsi/jobs?filename=case.svs", headers=UPLOAD, content=slides.blank.read_bytes()
    )
    assert job.status_code == 202, job.text
    done = wait_for(api, job.json()["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done["error"]
    assert list(_uploads(api).iterdir()) == []
    assert api.get(done["links"]["heatmap"], headers=PATHOLOGIST).status_code == 200


def test_a_cancelled_upload_is_deleted_too(api: TestClient, slides: Slides) -> None:
    job = api.post(
        "/v1/wsi/jobs?filename=case.svs", headers=UPLOAD, content=slides.tumour.read_bytes()
    )
    api.post(f"/v1/wsi/jobs/{job.json()['id']}/cancel", headers=PATHOLOGIST)
    wait_for(api, job.json()["id"], {"cancelled", "succeeded", "failed"})
    deadline = time.monotonic() + 10  # the job's task ends, then releases the file
    while list(_uploads(api).iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(_uploads(api).iterdir()) == []


def test_uploads_are_kept_when_retention_says_keep(slides: Slides, tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        settings = settings_for(tmp_path / "var", slides.root, wsi_upload_retention="keep")
        with TestClient(create_app(settings)) as client:
            job = client.post(
                "/v1/wsi/jobs?filename=case.tiff", headers=UPLOAD, content=slides.blank.read_bytes()
            )
            wait_for(client, job.json()["id"], {"succeeded", "failed"})
            (kept,) = _uploads(client).iterdir()
    finally:
        os.umask(previous)
    assert kept.read_bytes() == slides.blank.read_bytes()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600  # patient data, whatever the umask
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700


def _analysis(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its turnaround, whose deliveries go on after the analysis."""
    return {key: value for key, value in report.items() if key != "turnaround"}


def test_other_parameters_are_another_report_and_earlier_results_stay(api: TestClient) -> None:
    first = wait_for(api, submit(api, "tumour.svs", max_regions=1).json()["id"], {"succeeded"})
    geojson = api.get(first["links"]["geojson"], headers=PATHOLOGIST).content
    second = wait_for(api, submit(api, "tumour.svs", max_regions=3).json()["id"], {"succeeded"})
    assert second["report"]["id"] != first["report"]["id"]
    assert len(first["report"]["findings"][0]["regions"]) == 1
    again = api.get(f"/v1/wsi/jobs/{first['id']}", headers=PATHOLOGIST).json()
    assert _analysis(again["report"]) == _analysis(first["report"])
    assert api.get(first["links"]["geojson"], headers=PATHOLOGIST).content == geojson
    same = wait_for(api, submit(api, "tumour.svs", max_regions=1).json()["id"], {"succeeded"})
    assert same["report"]["id"] == first["report"]["id"]
    assert same["report"]["created_at"] == first["report"]["created_at"]


def test_a_slide_report_answers_pathologists_only(api: TestClient) -> None:
    done = wait_for(api, submit(api, "blank.tiff").json()["id"], {"succeeded"})
    url = f"/v1/reports/{done['report']['id']}"
    assert api.get(url, headers=PATHOLOGIST).status_code == 200
    for role in (Role.radiologist, Role.lab):
        refused = api.get(url, headers=auth(role))
        assert refused.status_code == 403 and refused.json()["code"] == "report_kind_not_allowed"
        overlay = api.get(f"{url}/overlay.png", headers=auth(role))
        assert overlay.status_code == 403


def test_a_slide_in_the_second_root_is_found_by_its_relative_path(
    api: TestClient, two_roots: list[Path]
) -> None:
    found = resolve_slide_path("cases/tumour-b.svs", two_roots)
    assert found == (two_roots[1] / "cases" / "tumour-b.svs").resolve()
    with pytest.raises(NotFound):
        resolve_slide_path("cases/absent.svs", two_roots)
    with pytest.raises(Forbidden):
        resolve_slide_path("../outside.svs", two_roots)
    job = submit(api, "cases/tumour-b.svs")
    assert job.status_code == 202, job.text
