"""The review workspace in a real browser: Debian's headless Chromium driven by
Selenium against a real `aidx serve`. A radiologist signs in, opens the chest
worklist and a real CR's report, toggles the heatmap and sets its opacity, agrees
with a finding (the feedback API then shows it), and switches to Vietnamese; a lab
technician's navigation shows no imaging. Screenshots go to the test's folder (or
AIDX_UI_SCREENSHOTS)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aidx.inference.settings import Role
from aidx.service.routes.ui import UI_DIR

from ..conftest import KEYS, auth, dicom_bytes
from .conftest import AidxServer

pytestmark = pytest.mark.integration

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:  # `make peers` installs both from Debian
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

WAIT_S = 20


@pytest.fixture(scope="module")
def server(aidx_server: AidxServer) -> str:
    return aidx_server("ui-srv", enabled_models='["cxr_pneumonia"]', writeback="false")


@pytest.fixture(scope="module")
def report(server: str) -> dict[str, Any]:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    answer = httpx.post(
        f"{server}/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers, timeout=60
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--lang=en-GB"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("AIDX_UI_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait(driver: Any) -> Any:
    return WebDriverWait(driver, WAIT_S)


def sign_in(driver: Any, server: str, role: Role) -> None:
    driver.get(f"{server}/ui/")
    field = _wait(driver).until(ec.visibility_of_element_located((By.ID, "signin-key")))
    field.send_keys(KEYS[role])
    driver.find_element(By.ID, "signin-submit").click()
    _wait(driver).until(ec.visibility_of_element_located((By.ID, "sign-out")))


def _loaded(driver: Any, image_id: str) -> bool:
    script = "const i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth"
    return bool(driver.execute_script(script, image_id))


def open_report(driver: Any, rid: str) -> None:
    row = f'tr[data-report-id="{rid}"] a'
    _wait(driver).until(ec.element_to_be_clickable((By.CSS_SELECTOR, row))).click()
    _wait(driver).until(lambda d: _loaded(d, "radiograph") and _loaded(d, "heat"))


def test_a_radiologist_reviews_a_chest_report_in_english_and_vietnamese(
    server: str, report: dict[str, Any], browser: Any, shots: Path
) -> None:
    rid = report["id"]
    sign_in(browser, server, Role.radiologist)
    nav = [a.get_attribute("id") for a in browser.find_elements(By.CSS_SELECTOR, "#nav a")]
    assert nav == ["nav-cxr", "nav-ct"]
    assert browser.get_cookie("aidx_session")["httpOnly"] is True
    assert browser.execute_script("return document.cookie") == ""  # HttpOnly: unseen by JS
    browser.save_screenshot(str(shots / "worklist.png"))
    open_report(browser, rid)

    heat = browser.find_element(By.ID, "heat")
    assert heat.is_displayed()
    browser.find_element(By.ID, "heat-toggle").click()
    assert not heat.is_displayed()
    browser.find_element(By.ID, "heat-toggle").click()
    slider = browser.find_element(By.ID, "heat-opacity")
    browser.execute_script(
        "arguments[0].value = 40; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    assert heat.value_of_css_property("opacity") == "0.4"

    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-finding="Pneumonia"]')
    row.find_element(By.CSS_SELECTOR, 'input[value="agree"]').click()
    row.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    saved = row.find_element(By.CSS_SELECTOR, ".saved")
    _wait(browser).until(lambda _: saved.text == "Saved")
    browser.save_screenshot(str(shots / "cxr-report.png"))
    feedback = httpx.get(
        f"{server}/v1/reports/{rid}/feedback", headers=auth(Role.radiologist), timeout=30
    ).json()
    assert [(a["finding"], a["verdict"], a["by"]) for a in feedback["current"]] == [
        ("Pneumonia", "agree", "radiologist-1")
    ]

    Select(browser.find_element(By.ID, "lang")).select_by_value("vi")
    heading = browser.find_element(By.CSS_SELECTOR, '[data-i18n="findings.heading"]')
    _wait(browser).until(lambda _: heading.text == "Các phát hiện")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "vi"
    _assert_all_vietnamese(browser)
    browser.save_screenshot(str(shots / "cxr-report-vi.png"))


def _assert_all_vietnamese(browser: Any) -> None:
    import json

    vi = json.loads((UI_DIR / "i18n" / "vi.json").read_text(encoding="utf-8"))
    shown = browser.execute_script(
        "return [...document.querySelectorAll('[data-i18n]')]"
        ".filter(e => e.offsetParent !== null).map(e => [e.dataset.i18n, e.textContent])"
    )
    assert len(shown) > 20
    assert [(key, text) for key, text in shown if vi[key] != text] == []


def test_a_lab_technician_sees_no_imaging(
    server: str, report: dict[str, Any], browser: Any
) -> None:
    sign_in(browser, server, Role.lab)
    nav = [a.get_attribute("id") for a in browser.find_elements(By.CSS_SELECTOR, "#nav a")]
    assert nav == ["nav-labs"]
    browser.get(f"{server}/ui/#/report/{report['id']}")  # typed in by hand: refused
    status = browser.find_element(By.ID, "status")
    _wait(browser).until(lambda _: "report_kind_not_allowed" in status.text)
    assert browser.find_element(By.ID, "radiograph").get_attribute("src") in (None, "")
