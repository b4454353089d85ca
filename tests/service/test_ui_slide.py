"""The pathologist's slide view in a real browser (headless Chromium, Selenium) against
a real `aidx serve` that analysed a real OpenSlide pyramid: the pathologist signs in,
opens the slide's report from the worklist, clicks a region (the viewer zooms there
and the DeepZoom tiles of the full-resolution level load), shows the heatmap layer,
agrees with a region (the feedback API then shows it), and the page breaks no rule of
the Content-Security-Policy. A radiologist's key fetches no tile. The screenshot goes
to the test's folder (or AIDX_UI_SCREENSHOTS) and, small, to docs/screenshots/ when
AIDX_UPDATE_DOCS_SHOTS=1."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from aidx.inference.settings import Role
from aidx.pipelines.wsi.phantom import make_layout, write_slide

from ..conftest import auth
from .conftest import AidxServer
from .test_ui_browser import CHROMIUM, DRIVER, WAIT_S, shots, sign_in, webdriver  # noqa: F401

pytestmark = pytest.mark.integration
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "pathologist-slide.png"
MAX_DOCS_SHOT_BYTES = 150_000
PATHOLOGIST = auth(Role.pathologist)


@pytest.fixture
def browser() -> Iterator[Any]:
    """As test_ui_browser's, with the console kept (CSP refusals are logged there)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--lang=en-GB"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def slide_server(aidx_server: AidxServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("ui-slides")
    write_slide(root / "case.svs", make_layout(1, 4096, 3072, mpp=0.5, n_suspicious=2))
    return aidx_server(
        "ui-slide-srv", timeout_s=300,
        enabled_models='["wsi_tiles"]', writeback="false", wsi_slide_roots=f'["{root}"]',
    )  # fmt: skip


@pytest.fixture(scope="module")
def slide_report(slide_server: str) -> dict[str, Any]:
    job = httpx.post(
        f"{slide_server}/v1/wsi/jobs", json={"slide_path": "case.svs"}, headers=PATHOLOGIST
    ).json()
    deadline = time.monotonic() + 120
    while job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = httpx.get(f"{slide_server}/v1/wsi/jobs/{job['id']}", headers=PATHOLOGIST).json()
    assert job["state"] == "succeeded", job
    assert len(job["report"]["findings"][0]["regions"]) >= 2
    return dict(job["report"])


def _resources(driver: Any, part: str) -> list[dict[str, Any]]:
    script = (
        "return performance.getEntriesByType('resource').filter(e => e.name.includes(arguments[0]))"
        ".map(e => ({name: e.name, status: e.responseStatus}))"
    )
    return list(driver.execute_script(script, part))


def _tile_levels(driver: Any) -> list[int]:
    return [int(r["name"].split("/tiles/")[1].split("/")[0]) for r in _resources(driver, "/tiles/")]


def _view(driver: Any) -> dict[str, float]:
    data = driver.find_element(By.ID, "slide-viewer").get_attribute
    return {k: float(data(f"data-{k}") or "nan") for k in ("zoom", "centre-x", "centre-y")}


def _tiles_counted(server: str) -> float:
    text = httpx.get(f"{server}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("aidx_deepzoom_tiles_total "))
    return float(line.split()[1])


def test_a_pathologist_zooms_to_a_region_shows_the_heatmap_and_agrees(
    slide_server: str,
    slide_report: dict[str, Any],
    browser: Any,
    shots: Path,  # noqa: F811
) -> None:
    rid, wait = slide_report["id"], WebDriverWait(browser, WAIT_S)
    region = slide_report["findings"][0]["regions"][0]
    sign_in(browser, slide_server, Role.pathologist)
    wait.until(ec.element_to_be_clickable((By.ID, "nav-wsi"))).click()
    row = f'tr[data-report-id="{rid}"] a'
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, row))).click()
    wait.until(lambda d: not d.find_element(By.ID, "view-slide").get_attribute("hidden"))
    wait.until(lambda d: _view(d)["zoom"] > 0)
    outlines = browser.find_elements(By.CSS_SELECTOR, "#slide-viewer polygon.region-outline")
    assert len(outlines) == len(slide_report["findings"][0]["regions"])
    before = wait.until(lambda d: _tile_levels(d))
    home = _view(browser)

    browser.find_element(By.CSS_SELECTOR, 'tr.region-row[data-region="0"]').click()
    wait.until(lambda d: _view(d)["zoom"] > 2 * home["zoom"])
    view = _view(browser)
    assert region["x_min_px"] <= view["centre-x"] <= region["x_max_px"]
    assert region["y_min_px"] <= view["centre-y"] <= region["y_max_px"]
    # the finer tiles the zoom asked for came, every tile request succeeded
    wait.until(lambda d: sum(level > max(before) for level in _tile_levels(d)) >= 4)
    tiles = _resources(browser, "/tiles/")
    assert {t["status"] for t in tiles} == {200}, tiles
    assert _tiles_counted(slide_server) >= len(tiles)

    browser.find_element(By.ID, "slide-heat-toggle").click()
    viewer = browser.find_element(By.ID, "slide-viewer")
    wait.until(lambda _: viewer.get_attribute("data-heat") == "shown")
    wait.until(lambda d: [r["status"] for r in _resources(d, "/overlay.png")] == [200])

    answer = browser.find_element(
        By.CSS_SELECTOR, 'tr[data-region="1"] button[data-verdict="agree"]'
    )
    answer.click()
    wait.until(lambda _: answer.get_attribute("aria-pressed") == "true")
    feedback = httpx.get(f"{slide_server}/v1/reports/{rid}/feedback", headers=PATHOLOGIST).json()
    assert [(a["finding"], a["region"], a["verdict"], a["by"]) for a in feedback["current"]] == [
        ("Neoplasm", 1, "agree", "pathologist-1")
    ]
    browser.save_screenshot(str(shots / "pathologist-slide.png"))
    _save_docs_shot(browser.get_screenshot_as_png())
    refused = [
        e["message"] for e in browser.get_log("browser") if "Content Security" in e["message"]
    ]
    assert refused == []


def _save_docs_shot(png: bytes) -> None:
    """The screenshot, halved and in 128 colours: small enough for the README."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((image.width * 2 // 3, image.height * 2 // 3), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.quantize(colors=128).save(out, format="PNG", optimize=True)
    assert len(out.getvalue()) < MAX_DOCS_SHOT_BYTES
    if os.environ.get("AIDX_UPDATE_DOCS_SHOTS") == "1":  # a test run leaves the tree clean
        DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
        DOCS_SHOT.write_bytes(out.getvalue())


def test_a_radiologist_key_fetches_no_tile(slide_server: str, slide_report: dict[str, Any]) -> None:
    rid = slide_report["id"]
    for path in ("dzi", "tiles/0/0_0.jpeg"):
        refused = httpx.get(
            f"{slide_server}/v1/wsi/reports/{rid}/{path}", headers=auth(Role.radiologist)
        )
        assert refused.status_code == 403 and refused.json()["code"] == "role_not_allowed"
