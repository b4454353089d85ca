"""The radiologist's image viewers in a real browser (Debian's headless Chromium,
Selenium) against a real `aidx serve` with the CXR and CT demo models.

CXR: the full-resolution radiograph on a canvas; zooming, panning and window/level
change the canvas's real pixels; the heatmap layer stays in register and toggles.
CT: the series scrolls by keys, wheel and slider; a click on a lesion jumps to its key
slice; an answer on the finding reaches the feedback API. Both views in Vietnamese
show no untranslated string. Screenshots go to the test's folder (or
AIDX_UI_SCREENSHOTS), each also as a small PNG (`*-small.png`, for docs/screenshots)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from aidx.inference.settings import Role
from aidx.pipelines.ct import synthetic

from ..conftest import auth, dicom_bytes
from .conftest import AidxServer
from .test_ui_browser import _assert_all_vietnamese, _wait, browser, shots, sign_in

pytestmark = pytest.mark.integration
__all__ = ["browser", "shots"]  # fixtures shared with the workspace's first browser test

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402

SMALL_WIDTH_PX = 720  # the docs' copies: a palette PNG this wide stays well under 150 KB


@pytest.fixture(scope="module")
def server(aidx_server: AidxServer) -> str:
    return aidx_server(
        "ui-viewers", enabled_models='["cxr_pneumonia", "ct_pneumonia"]', writeback="false"
    )


@pytest.fixture(scope="module")
def cxr_id(server: str) -> str:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    answer = httpx.post(
        f"{server}/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


@pytest.fixture(scope="module")
def ct_report(server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    phantom = synthetic.generate(
        np.random.default_rng(5), shape_kji=(68, 86, 114), spacing_mm=(3.5, 3.5, 5.0),
        n_lesions=2, noise_hu=15,
    )  # fmt: skip
    paths = synthetic.write_series(phantom, tmp_path_factory.mktemp("ui_ct"))
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]
    answer = httpx.post(f"{server}/v1/ct", files=files, headers=auth(Role.radiologist), timeout=300)
    assert answer.status_code == 200, answer.text
    report = dict(answer.json())
    assert len({lesion["key_slice_k"] for lesion in report["lesions"]}) >= 2
    return report


def save_shot(driver: Any, folder: Path, name: str) -> None:
    """The screenshot, and a small palette copy of it for the docs."""
    png = driver.get_screenshot_as_png()
    (folder / f"{name}.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    height = round(image.height * SMALL_WIDTH_PX / image.width)
    small = image.resize((SMALL_WIDTH_PX, height), Image.Resampling.LANCZOS).quantize(128)
    small.save(folder / f"{name}-small.png", optimize=True)
    assert (folder / f"{name}-small.png").stat().st_size < 150_000


CANVAS_SUM = """
const c = document.getElementById('xray-canvas');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let sum = 0;
for (let i = 0; i < d.length; i += 4) sum += d[i];
return sum;
"""


def canvas(driver: Any) -> Any:
    return driver.find_element(By.ID, "xray-canvas")


def state(driver: Any) -> dict[str, str]:
    return dict(driver.execute_script("return {...arguments[0].dataset}", canvas(driver)))


def pixels_change(driver: Any, act: Any) -> tuple[dict[str, str], dict[str, str]]:
    before, before_sum = state(driver), driver.execute_script(CANVAS_SUM)
    act()
    _wait(driver).until(lambda d: d.execute_script(CANVAS_SUM) != before_sum)
    return before, state(driver)


def heat_in_register(driver: Any) -> bool:
    """The heat layer covers the radiograph exactly where the canvas draws it."""
    return bool(
        driver.execute_script(
            """
        const c = document.getElementById('xray-canvas');
        const h = document.getElementById('heat').getBoundingClientRect();
        const v = c.getBoundingClientRect();
        const [x, y] = c.dataset.pan.split(',').map(Number);
        const z = Number(c.dataset.zoom);
        const w = Number(document.getElementById('heat').style.width.replace('px', ''));
        return Math.abs(h.left - v.left - x) < 1.5 && Math.abs(h.top - v.top - y) < 1.5
            && Math.abs(h.width - w * z) < 1.5;
        """
        )
    )


def test_the_radiologist_zooms_pans_and_windows_a_radiograph(
    server: str, cxr_id: str, browser: Any, shots: Path
) -> None:
    sign_in(browser, server, Role.radiologist)
    browser.get(f"{server}/ui/#/report/{cxr_id}")
    _wait(browser).until(lambda d: state(d).get("source") == "full" and "window" in state(d))
    assert heat_in_register(browser)
    fitted = state(browser)

    zoom_in = ActionChains(browser).scroll_from_origin(
        ScrollOrigin.from_element(canvas(browser)), 0, -400
    )
    before, after = pixels_change(browser, zoom_in.perform)
    assert float(after["zoom"]) > float(before["zoom"])
    assert heat_in_register(browser)

    pan = ActionChains(browser).click_and_hold(canvas(browser)).move_by_offset(80, 50).release()
    before, after = pixels_change(browser, pan.perform)
    assert after["pan"] != before["pan"] and after["zoom"] == before["zoom"]
    assert heat_in_register(browser)

    preset = Select(browser.find_element(By.ID, "wl-preset"))
    before, after = pixels_change(browser, lambda: preset.select_by_value("contrast"))
    (center0, width0), (center1, width1) = (
        [float(v) for v in s["window"].split(",")] for s in (before, after)
    )
    assert center1 == center0 and width1 == pytest.approx(width0 / 2)

    drag = (ActionChains(browser).key_down(Keys.SHIFT).click_and_hold(canvas(browser))
            .move_by_offset(60, 40).release().key_up(Keys.SHIFT))  # fmt: skip
    before, after = pixels_change(browser, drag.perform)
    assert after["window"] != before["window"] and after["pan"] == before["pan"]
    assert (
        Select(browser.find_element(By.ID, "wl-preset")).first_selected_option.get_attribute(
            "value"
        )
        == "custom"
    )

    heat = browser.find_element(By.ID, "heat")
    browser.find_element(By.ID, "heat-toggle").click()
    assert not heat.is_displayed()
    browser.find_element(By.ID, "heat-toggle").click()
    assert heat.is_displayed()

    pixels_change(browser, browser.find_element(By.ID, "view-reset").click)
    assert (state(browser)["zoom"], state(browser)["pan"]) == (fitted["zoom"], fitted["pan"])
    assert state(browser)["window"] == fitted["window"]
    save_shot(browser, shots, "cxr-viewer")

    Select(browser.find_element(By.ID, "lang")).select_by_value("vi")
    _wait(browser).until(
        lambda d: d.find_element(By.ID, "wl-values").text.startswith("Mức") and "window" in state(d)
    )
    _assert_all_vietnamese(browser)


def slice_shown(driver: Any) -> int:
    stage = driver.find_element(By.ID, "ct-stage")
    k = int(stage.get_attribute("data-slice"))
    img = driver.find_element(By.ID, "ct-slice")
    assert img.get_attribute("src").split("?")[0].endswith(f"/slices/{k}.png")
    return k


def slice_loaded(driver: Any) -> bool:
    script = "const i = document.getElementById('ct-slice'); return i.complete && i.naturalWidth"
    return bool(driver.execute_script(script))


def test_the_radiologist_scrolls_a_ct_and_jumps_to_a_lesion(
    server: str, ct_report: dict[str, Any], browser: Any, shots: Path
) -> None:
    rid = ct_report["id"]
    sign_in(browser, server, Role.radiologist)
    browser.get(f"{server}/ui/#/report/{rid}")
    rows = _wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#ct-lesion-rows tr.lesion")
    )
    assert len(rows) == len(ct_report["lesions"])
    _wait(browser).until(slice_loaded)

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.HOME)
    _wait(browser).until(lambda d: slice_shown(d) == 0)
    body.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    _wait(browser).until(lambda d: slice_shown(d) == 2)
    stage = browser.find_element(By.ID, "ct-stage")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(stage), 0, 100).perform()
    _wait(browser).until(lambda d: slice_shown(d) == 3)
    body.send_keys(Keys.END)
    _wait(browser).until(lambda d: slice_shown(d) == ct_report["slices"] - 1)

    for lesion in sorted(ct_report["lesions"], key=lambda e: -e["key_slice_k"]):
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-lesion="{lesion["number"]}"]')
        row.click()
        _wait(browser).until(lambda d, k=lesion["key_slice_k"]: slice_shown(d) == k)
        _wait(browser).until(slice_loaded)
        assert row.get_attribute("aria-selected") == "true"
        assert "on-slice" in row.get_attribute("class")
        assert browser.find_element(By.ID, "ct-slider").get_attribute("value") == str(
            lesion["key_slice_k"]
        )
    lungs = browser.find_elements(By.CSS_SELECTOR, "#ct-lung-rows tr")
    assert {r.get_attribute("data-side") for r in lungs} == {"right", "left"}

    finding = browser.find_element(By.CSS_SELECTOR, "#findings-rows tr")
    finding.find_element(By.CSS_SELECTOR, 'input[value="disagree"]').click()
    Select(finding.find_element(By.NAME, "reason")).select_by_value("false_positive")
    finding.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    saved = finding.find_element(By.CSS_SELECTOR, ".saved")
    _wait(browser).until(lambda _: saved.text == "Saved")
    browser.execute_script("document.getElementById('ct-panel').scrollIntoView()")
    save_shot(browser, shots, "ct-viewer")
    feedback = httpx.get(
        f"{server}/v1/reports/{rid}/feedback", headers=auth(Role.radiologist), timeout=30
    ).json()
    assert [(a["verdict"], a["reason"]) for a in feedback["current"]] == [
        ("disagree", "false_positive")
    ]

    Select(browser.find_element(By.ID, "lang")).select_by_value("vi")
    _wait(browser).until(lambda d: d.find_element(By.ID, "ct-position").text.startswith("Lát cắt"))
    _wait(browser).until(slice_loaded)
    _assert_all_vietnamese(browser)
    sides = {r.find_elements(By.TAG_NAME, "td")[2].text
             for r in browser.find_elements(By.CSS_SELECTOR, "#ct-lesion-rows tr")}  # fmt: skip
    assert sides <= {"Phải", "Trái"}
    browser.execute_script("document.getElementById('ct-panel').scrollIntoView()")
    save_shot(browser, shots, "ct-viewer-vi")
