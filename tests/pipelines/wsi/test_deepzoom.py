"""DeepZoom tiles of a whole-slide report's slide, through the real app: the
descriptor and tiles of a real OpenSlide pyramid, bounds as coded 404s, pathologists
only, the opening audited (not each tile), tiles counted; and the LRU of open slides
under threads."""

from __future__ import annotations

import io
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aidx.inference.settings import Role
from aidx.pipelines.wsi.deepzoom import DeepZoomSlides
from aidx.service.app import create_app
from tests.conftest import auth, dicom_bytes, make_settings

from .conftest import Slides
from .test_routes import PATHOLOGIST, submit, wait_for

DZ = "{http://schemas.microsoft.com/deepzoom/2008}"


@pytest.fixture(scope="module")
def app(slides: Slides, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    var_dir = tmp_path_factory.mktemp("dz-var")
    settings = make_settings(
        var_dir, enabled_models=["wsi_tiles", "cxr_pneumonia"], wsi_slide_roots=[slides.root],
        wsi_max_upload_bytes=20 * 1024 * 1024,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client, settings


@pytest.fixture(scope="module")
def rid(app: Any) -> str:
    client, _ = app
    job = wait_for(client, submit(client, "tumour.svs").json()["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded", job["error"]
    return str(job["report"]["id"])


def _audit(settings: Any, action: str) -> list[dict[str, Any]]:
    lines = settings.audit_log.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["action"] == action]


def _tiles_counted(client: TestClient) -> float:
    text = client.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("aidx_deepzoom_tiles_total "))
    return float(line.split()[1])


def test_the_descriptor_and_tiles_cover_level_0_of_the_slide(app: Any, rid: str) -> None:
    client, settings = app
    answer = client.get(f"/v1/wsi/reports/{rid}/dzi", headers=PATHOLOGIST)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    assert answer.headers["cache-control"] == "private, no-cache"
    image = ET.fromstring(answer.text)
    size = image.find(f"{DZ}Size")
    assert size is not None and (size.get("Width"), size.get("Height")) == ("4096", "3072")
    assert (image.get("TileSize"), image.get("Overlap"), image.get("Format")) == (
        "254",
        "1",
        "jpeg",
    )
    top = 12  # ceil(log2(4096)): the full-resolution level
    counted = _tiles_counted(client)
    for level, col, row, side in ((top, 0, 0, 255), (top, 3, 2, 256), (0, 0, 0, 1)):
        tile = client.get(
            f"/v1/wsi/reports/{rid}/tiles/{level}/{col}_{row}.jpeg", headers=PATHOLOGIST
        )
        assert tile.status_code == 200, tile.text
        assert tile.headers["content-type"] == "image/jpeg"
        assert tile.headers["cache-control"] == "private, max-age=3600"
        assert Image.open(io.BytesIO(tile.content)).size[0] == side
    assert _tiles_counted(client) == counted + 3
    # the descriptor is the opening, audited; the tiles after it add no line
    opened = _audit(settings, "wsi.slide.open")
    assert [(e["actor"], e["resource"], e["outcome"]) for e in opened] == [
        ("pathologist-1", f"report/{rid}", "ok")
    ]


@pytest.mark.parametrize(
    "tile",
    ["13/0_0.jpeg", "12/17_0.jpeg", "12/0_13.jpeg", "-1/0_0.jpeg", "x/0_0.jpeg", "12/0_1e3.jpeg",
     "99999999/0_0.jpeg"],
)  # fmt: skip
def test_a_tile_outside_the_pyramid_is_a_coded_404(app: Any, rid: str, tile: str) -> None:
    client, _ = app
    answer = client.get(f"/v1/wsi/reports/{rid}/tiles/{tile}", headers=PATHOLOGIST)
    assert answer.status_code == 404 and answer.json()["code"] == "tile_not_found"


def test_only_pathologists_fetch_tiles(app: Any, rid: str) -> None:
    client, _ = app
    for path in ("dzi", "tiles/12/0_0.jpeg"):
        refused = client.get(f"/v1/wsi/reports/{rid}/{path}", headers=auth(Role.radiologist))
        assert refused.status_code == 403 and refused.json()["code"] == "role_not_allowed"
        assert client.get(f"/v1/wsi/reports/{rid}/{path}").status_code == 401


def test_a_tile_without_the_descriptor_is_recorded_as_an_opening_once(app: Any, rid: str) -> None:
    client, settings = app
    admin = auth(Role.admin)  # admin may use every route
    for col in range(3):
        assert client.get(f"/v1/wsi/reports/{rid}/tiles/11/{col}_0.jpeg", headers=admin).is_success
    opened = [e["actor"] for e in _audit(settings, "wsi.slide.open")]
    assert opened.count("admin-1") == 1


def test_no_tiles_for_an_unknown_report_or_another_kind(app: Any) -> None:
    client, _ = app
    missing = client.get("/v1/wsi/reports/nope/dzi", headers=PATHOLOGIST)
    assert missing.status_code == 404 and missing.json()["code"] == "report_not_found"
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    cxr = client.post("/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers).json()
    refused = client.get(f"/v1/wsi/reports/{cxr['id']}/dzi", headers=PATHOLOGIST)
    assert refused.status_code == 403 and refused.json()["code"] == "report_kind_not_allowed"


def test_a_deleted_upload_has_no_slide_to_view(app: Any, slides: Slides) -> None:
    client, _ = app
    response = client.post(
        "/v1/wsi/jobs?filename=case.svs",
        headers={**PATHOLOGIST, "Content-Type": "application/octet-stream"},
        content=slides.fine.read_bytes(),  # a slide of its own: another report
    )
    done = wait_for(client, response.json()["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done["error"]
    gone = client.get(f"/v1/wsi/reports/{done['report']['id']}/dzi", headers=PATHOLOGIST)
    assert gone.status_code == 404 and gone.json()["code"] == "slide_not_available"


def test_the_open_slides_stay_bounded_under_concurrent_reads(slides: Slides) -> None:
    cache = DeepZoomSlides(capacity=2)
    paths: list[Path] = [slides.tumour, slides.fine, slides.blank, slides.no_mpp]
    failures: list[BaseException] = []

    def read(worker: int) -> None:
        try:
            for i in range(40):
                key = str((worker + i) % len(paths))
                slide = cache.open(key, paths[int(key)])
                top = slide.generator.level_count - 1
                assert slide.tile_jpeg(top, 0, 0).startswith(b"\xff\xd8")
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=read, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(cache) == 2
