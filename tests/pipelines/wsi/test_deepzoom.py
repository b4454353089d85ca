"""DeepZoom tiles of a whole-slide report's slide, through the real app: the
descriptor and tiles of a real OpenSlide pyramid, bounds as coded 404s, pathologists
only, the opening audited (not each tile, nor a tile answered from memory), tiles
counted; tiles drawn as openslide's DeepZoomGenerator draws them; the LRU of open
slides under threads and the byte-bounded LRU of encoded tiles."""

from __future__ import annotations

import io
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aidx.inference.settings import Role
from aidx.pipelines.wsi.deepzoom import DeepZoomSlides, TileCache, on_background
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
        "256",
        "0",
        "jpeg",
    )
    top = 12  # ceil(log2(4096)): the full-resolution level
    counted = _tiles_counted(client)
    for level, col, row, side in ((top, 0, 0, 256), (top, 3, 2, 256), (0, 0, 0, 1)):
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


def _mean_abs_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def test_tiles_are_drawn_as_the_deepzoom_generator_draws_them(slides: Slides) -> None:
    """Same size at every level and tile position (edges carry one overlap pixel less),
    pixels within 2 grey levels on average: identical where a slide level matches, a box
    reduce for Lanczos where the slide has no level (below its smallest, 1024 px)."""
    slide = DeepZoomSlides().open("tumour", slides.tumour)
    gen = slide.generator
    for level in range(gen.level_count):
        cols, rows = gen.level_tiles[level]
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2), (0, rows - 1)}:
            ours, theirs = slide.tile_image(level, col, row), gen.get_tile(level, (col, row))
            assert (ours.size, ours.mode) == (theirs.size, theirs.mode), (level, col, row)
            jpeg = Image.open(io.BytesIO(slide.tile_jpeg(level, col, row)))
            assert (jpeg.format, jpeg.size) == ("JPEG", theirs.size)
            if level >= 10:  # 1024 px wide and up: read from a slide level as it is
                assert _mean_abs_difference(ours, theirs) == 0, (level, col, row)
            elif min(gen.level_dimensions[level]) >= 3:  # a whole slide in a few pixels
                # is one colour either way, averaged by a box or weighed by Lanczos
                assert _mean_abs_difference(ours, theirs) < 2, (level, col, row)


def test_a_transparent_region_is_laid_on_the_background_as_deepzoom_lays_it() -> None:
    region = Image.new("RGBA", (8, 8), (200, 40, 90, 255))
    region.paste((10, 20, 30, 0), (0, 0, 4, 8))  # a sparse slide's empty half
    region.paste((10, 20, 30, 128), (4, 0, 6, 8))
    background = "#f0e0d0"
    expected = Image.composite(region, Image.new("RGB", (8, 8), background), region)
    assert on_background(region, background).tobytes() == expected.tobytes()
    opaque = Image.new("RGBA", (4, 4), (1, 2, 3, 255))
    assert on_background(opaque, background).tobytes() == opaque.convert("RGB").tobytes()


def test_a_tile_again_comes_from_memory_and_is_still_an_opening(app: Any, rid: str) -> None:
    """The tiles a viewer goes back to are answered from the cache of encoded tiles; the
    first tile a viewer sees of a slide is recorded as an opening, from memory or not."""
    client, settings = app
    svc = client.app.state.services
    svc.deepzoom.clear()  # the slide is opened again: nobody has viewed it since
    url = f"/v1/wsi/reports/{rid}/tiles/12/2_1.jpeg"
    first = client.get(url, headers=PATHOLOGIST)
    assert first.status_code == 200 and svc.deepzoom.tiles.get((rid, 12, 2, 1)) == first.content
    admin = auth(Role.admin)
    before = [e["actor"] for e in _audit(settings, "wsi.slide.open")].count("admin-1")
    for _ in range(2):
        again = client.get(url, headers=admin)
        assert again.status_code == 200 and again.content == first.content
    assert again.headers["cache-control"] == "private, max-age=3600"
    opened = [e["actor"] for e in _audit(settings, "wsi.slide.open")]
    assert opened.count("admin-1") == before + 1
    assert len(svc.deepzoom.tiles) == 1


def test_the_tile_cache_keeps_the_most_recent_tiles_within_its_bytes() -> None:
    cache = TileCache(max_bytes=250)
    for col in range(4):
        cache.put(("r", 12, col, 0), bytes([col]) * 100)
    assert cache.get(("r", 12, 0, 0)) is None and cache.get(("r", 12, 1, 0)) is None
    assert cache.get(("r", 12, 2, 0)) == b"\x02" * 100 and cache.nbytes == 200
    cache.put(("r", 12, 4, 0), b"x" * 100)  # 3 was used least lately: dropped, 2 kept
    assert cache.get(("r", 12, 3, 0)) is None and cache.get(("r", 12, 2, 0)) is not None
    cache.put(("r", 12, 5, 0), b"y" * 251)  # larger than the whole cache: not kept
    assert cache.get(("r", 12, 5, 0)) is None and cache.nbytes == 200
    off = TileCache(max_bytes=0)
    off.put(("r", 12, 0, 0), b"z")
    assert len(off) == 0 and off.nbytes == 0


def test_the_tile_cache_bytes_are_a_setting(slides: Slides, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, wsi_slide_roots=[slides.root], wsi_deepzoom_cache_bytes=0)
    assert create_app(settings).state.services.deepzoom.tiles.max_bytes == 0
