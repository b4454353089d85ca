"""A report shared by QR code, in a real browser: the radiologist makes a link from the
report view (its QR code drawn), the link opens on a phone-sized window without any key
or cookie and shows the findings, and stops showing them once revoked or expired."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aidx.inference.settings import Role

from ..conftest import auth
from .test_ui_browser import _loaded, _wait, browser, report, server, shots, sign_in

pytestmark = pytest.mark.integration
__all__ = ["browser", "report", "server", "shots"]  # the fixtures, shared

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402


def _make_link(driver: Any, server: str, rid: str) -> str:
    driver.get(f"{server}/ui/#/report/{rid}")
    button = _wait(driver).until(ec.element_to_be_clickable((By.ID, "share-create")))
    button.click()
    _wait(driver).until(lambda d: _loaded(d, "share-qr"))
    url: str = driver.find_element(By.ID, "share-url").get_attribute("href")
    return url


def test_a_shared_link_opens_without_a_key_until_revoked(
    server: str, report: dict[str, Any], browser: Any, shots: Path
) -> None:
    sign_in(browser, server, Role.radiologist)
    url = _make_link(browser, server, report["id"])
    assert url.startswith(f"{server}/share/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#share-rows tr")
    assert len(rows) >= 1 and rows[0].find_element(By.CSS_SELECTOR, ".share-live")
    browser.save_screenshot(str(shots / "share-qr.png"))

    browser.delete_all_cookies()  # the patient's phone: no session, no key
    browser.set_window_size(390, 844)
    browser.get(url)
    assert browser.find_element(By.ID, "share-report").is_displayed()
    assert "Pneumonia" in browser.page_source
    _wait(browser).until(lambda d: d.execute_script(
        "const i = document.querySelector('img.overlay'); return i && i.complete && i.naturalWidth"
    ))  # fmt: skip
    browser.save_screenshot(str(shots / "share-phone.png"))

    sid = url.rsplit("/", 1)[1].split(".")[0]
    path = f"{server}/v1/reports/{report['id']}/shares/{sid}"
    assert httpx.delete(path, headers=auth(Role.radiologist), timeout=30).status_code == 204
    browser.refresh()
    gone = browser.find_element(By.ID, "share-gone")
    assert gone.get_attribute("data-state") == "revoked" and "Pneumonia" not in browser.page_source


def test_an_expired_link_shows_no_data(server: str, report: dict[str, Any], browser: Any) -> None:
    answer = httpx.post(
        f"{server}/v1/reports/{report['id']}/shares", json={"ttl_s": 1},
        headers=auth(Role.radiologist), timeout=30,
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    time.sleep(1.5)
    browser.get(answer.json()["url"])
    gone = browser.find_element(By.ID, "share-gone")
    assert gone.get_attribute("data-state") == "expired" and "Pneumonia" not in browser.page_source
