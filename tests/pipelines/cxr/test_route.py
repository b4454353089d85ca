"""POST /v1/cxr then GET its overlay, in-process with the real demo model: the
analysis saves only the overlay's inputs; the first GET renders and caches the PNG."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aidx.inference.settings import Role
from aidx.pipelines.cxr.evidence import OVERLAY_FILE, OVERLAY_INPUTS_FILE
from aidx.pipelines.cxr.full_image import SOURCE_FILES
from aidx.service.app import create_app
from tests.conftest import auth, dicom_bytes, make_settings

PNEUMONIA = "233604007"
HEADERS = {**auth(Role.radiologist), "Content-Type": "application/dicom"}


@pytest.fixture(scope="module")
def var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cxr-overlay")


@pytest.fixture(scope="module")
def api(var: Path) -> Iterator[TestClient]:
    # the default configuration: write-back on (to the folder sink), so the POST also
    # builds the secondary capture from the same inputs
    with TestClient(create_app(make_settings(var, enabled_models=["cxr_pneumonia"]))) as client:
        yield client


def analyse(api: TestClient, name: str = "RG1_UNCR.dcm") -> dict:  # type: ignore[type-arg]
    response = api.post("/v1/cxr", content=dicom_bytes(name), headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def overlay_url(report: dict) -> str:  # type: ignore[type-arg]
    (overlay,) = [e for e in report["evidence"] if e["kind"] == "overlay"]
    assert overlay["media_type"] == "image/png"
    assert overlay["url"] == f"/v1/reports/{report['id']}/overlay.png"
    return str(overlay["url"])


def test_right_after_post_a_report_has_the_overlay_inputs_not_the_png(
    api: TestClient, var: Path
) -> None:
    report = analyse(api)
    directory = var / "reports" / report["id"]
    # (and what the full-resolution radiograph the workspace windows is made from: no
    # rendering either)
    assert {p.name for p in directory.iterdir()} == {
        "report.json",
        OVERLAY_INPUTS_FILE,
        *SOURCE_FILES,
    }
    pneumonia = next(f for f in report["findings"] if f["concept"]["code"] == PNEUMONIA)
    with np.load(directory / OVERLAY_INPUTS_FILE) as npz:
        assert npz["grey"].dtype == np.uint8 and npz["grey"].shape == (1024, 964)
        assert npz["cam"].ndim == 2  # the demo model has an activation map
        assert float(npz["probability"]) == pytest.approx(pneumonia["probability"], abs=1e-6)
        boxes = [[r["x_min_px"], r["y_min_px"], r["x_max_px"], r["y_max_px"]]
                 for r in pneumonia["regions"]]  # fmt: skip
        assert npz["boxes_px"].reshape(-1, 4).tolist() == boxes
    timings = report["timings"]
    assert 0 < timings["postprocess_ms"] < timings["total_ms"]


def test_the_first_get_renders_and_caches_the_second_is_served_from_the_cache(
    api: TestClient, var: Path
) -> None:
    report = analyse(api)
    cached = var / "reports" / report["id"] / OVERLAY_FILE
    first = api.get(overlay_url(report), headers=auth(Role.radiologist))
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(first.content)) as image:
        assert image.mode == "RGB" and image.size == (964, 1024)
    rendered = cached.stat()
    second = api.get(overlay_url(report), headers=auth(Role.radiologist))
    assert second.content == first.content
    after = cached.stat()  # an atomic re-render would be a new inode
    assert (after.st_ino, after.st_mtime_ns) == (rendered.st_ino, rendered.st_mtime_ns)


def test_concurrent_first_gets_all_get_the_same_overlay(api: TestClient, var: Path) -> None:
    report = analyse(api, "RG1_UNCI.dcm")
    assert not (var / "reports" / report["id"] / OVERLAY_FILE).exists()
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda _: api.get(overlay_url(report), headers=auth(Role.radiologist)),
                     range(6))
        )  # fmt: skip
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert (var / "reports" / report["id"] / OVERLAY_FILE).read_bytes() == answers[0].content


def test_a_report_whose_overlay_inputs_are_missing_answers_404(api: TestClient, var: Path) -> None:
    report = analyse(api, "RG1_J2KR.dcm")
    (var / "reports" / report["id"] / OVERLAY_INPUTS_FILE).unlink()
    response = api.get(overlay_url(report), headers=auth(Role.radiologist))
    assert response.status_code == 404 and response.json()["code"] == "evidence_not_found"
    assert api.get(f"/v1/reports/{report['id']}", headers=auth(Role.radiologist)).is_success


def test_the_timings_account_for_the_write_back_and_are_stored(api: TestClient) -> None:
    report = analyse(api, "RG1_UNCI.dcm")
    timings = report["timings"]
    assert timings["writeback_ms"] > 0  # the SR, SC and EMR objects went to the outbox
    steps = ("decode_ms", "preprocess_ms", "cpu_wait_ms", "queue_ms", "compute_ms")
    before_writeback = sum(timings[k] for k in (*steps, "postprocess_ms"))
    assert timings["total_ms"] >= before_writeback + timings["writeback_ms"]
    stored = api.get(f"/v1/reports/{report['id']}", headers=auth(Role.radiologist)).json()
    assert stored["timings"] == timings
