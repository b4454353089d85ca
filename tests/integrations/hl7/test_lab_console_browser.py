"""The lab technician's console and the engineer page in a real browser (headless
Chromium, Selenium) against a real `aidx serve` with its MLLP listener: a critical
result sent over MLLP appears in the console within 2 s, its detail shows the values
with the reference interval used (which partition, from which source: a child's is the
paediatric band), and it is acknowledged with a reason; a review
specimen lands in the review queue; an engineer sees models and the outbox."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aidx.inference.settings import Role

from ...conftest import auth
from ...service.test_ui_browser import _wait, browser, shots, sign_in
from .conftest import LabServer
from .messages import PANEL_20, oru
from .test_mllp import critical_message, send

pytestmark = pytest.mark.integration
__all__ = ["browser", "shots"]  # the fixtures, shared

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402


def _row(driver: Any, table: str, specimen: str) -> Any:
    """The row of `specimen` in a table the console redraws live (found in one script,
    so that a redraw between two WebDriver calls cannot leave a stale element)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tr`)]"
        ".find((r) => r.textContent.includes(arguments[1])) || null",
        table, specimen,
    )  # fmt: skip


def test_a_critical_result_reaches_the_console_and_is_acknowledged(
    lab_server: LabServer, browser: Any, shots: Path
) -> None:
    sign_in(browser, lab_server.url, Role.lab)
    live = browser.find_element(By.ID, "labs-live")
    _wait(browser).until(lambda _: live.get_attribute("data-state") == "on")

    ack = send(lab_server, critical_message("UI-C1", "MRN-UI", "SPC-UI1"))
    sent_at = time.monotonic()
    assert ack.msa.msa_1.value == "AA"
    # the critical potassium (the specimen raises an anomaly alert too)
    row = _wait(browser).until(lambda d: _row(d, "labs-alerts", "potassium"))
    assert time.monotonic() - sent_at < 2.0, "the alert took 2 s or more to show"
    assert "SPC-UI1" in row.text and "severity-critical" in row.get_attribute("class")
    alert_id = row.get_attribute("data-alert-id")

    row.click()
    values = _wait(browser).until(ec.visibility_of_element_located((By.ID, "labs-detail-values")))
    assert "7.4" in values.text and "3.5–5.1" in values.text  # the interval used
    assert "adult from 18 y · source: Mayo Clinic" in values.text  # which one, from where
    browser.save_screenshot(str(shots / "lab-console.png"))  # the alert and its detail
    form = browser.find_element(By.ID, "labs-ack")
    form.find_element(By.NAME, "reason").send_keys("called ward 4, doctor informed")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    row_of = f'#labs-alerts tr[data-alert-id="{alert_id}"]'
    gone = f"return document.querySelector('{row_of}') === null"
    _wait(browser).until(lambda d: d.execute_script(gone))
    assert form.find_element(By.CSS_SELECTOR, ".saved").text == ""
    acked = httpx.get(
        f"{lab_server.url}/v1/labs/alerts", params={"state": "acknowledged", "limit": 1000,
        "specimen_id": "SPC-UI1"}, headers=auth(Role.lab), timeout=30,
    ).json()["alerts"]  # fmt: skip
    assert [(a["acked_by"], a["ack_reason"]) for a in acked] == [
        ("lab-1", "called ward 4, doctor informed")
    ]


def test_a_childs_detail_names_the_paediatric_interval_and_its_source(
    lab_server: LabServer, browser: Any
) -> None:
    sign_in(browser, lab_server.url, Role.lab)
    five_years_old = critical_message("UI-CH", "MRN-UICH", "SPC-UICH").replace(
        b"|19750412|", b"|20210215|"
    )  # collected 2026-03-01
    assert send(lab_server, five_years_old).msa.msa_1.value == "AA"
    row = _wait(browser).until(lambda d: _row(d, "labs-alerts", "SPC-UICH"))
    assert "potassium" in row.text  # the critical potassium, the specimen's only alert
    row.click()
    values = _wait(browser).until(ec.visibility_of_element_located((By.ID, "labs-detail-values")))
    _wait(browser).until(lambda _: "SPC-UICH" in browser.find_element(By.ID, "labs-detail").text)
    potassium = next(r for r in values.find_elements(By.TAG_NAME, "tr") if "potassium" in r.text)
    assert "3.5–5 mmol/L" in potassium.text  # the child's band, not the adult 3.5–5.1
    assert "child 10 d–18 y · source: Harriet Lane" in potassium.text
    cited = potassium.find_element(By.CSS_SELECTOR, ".reference-interval").get_attribute("title")
    assert cited.startswith("The Harriet Lane Handbook")

    Select(browser.find_element(By.ID, "lang")).select_by_value("vi")
    _wait(browser).until(lambda d: "Hàng đợi xem xét" in d.page_source)
    _wait(browser).until(lambda d: _row(d, "labs-alerts", "SPC-UICH")).click()
    in_vietnamese = "trẻ em từ 10 ngày đến 18 tuổi · nguồn: Harriet Lane"
    _wait(browser).until(lambda d: in_vietnamese in d.find_element(By.ID, "labs-detail").text)
    Select(browser.find_element(By.ID, "lang")).select_by_value("en")


def test_a_review_specimen_is_in_the_review_queue_in_vietnamese(
    lab_server: LabServer, browser: Any
) -> None:
    sign_in(browser, lab_server.url, Role.lab)
    obx = [*PANEL_20[:4], "ST|99999-9^Unknown^L||see note||||||F"]  # unknown code: review
    send(lab_server, oru("UI-REV", patients=(("MRN-UIR", "F", [("SPC-UIR", obx)]),)))
    _wait(browser).until(lambda d: _row(d, "labs-review", "SPC-UIR"))
    assert _row(browser, "labs-alerts", "SPC-UIR") is None
    Select(browser.find_element(By.ID, "lang")).select_by_value("vi")
    _wait(browser).until(lambda d: "Hàng đợi xem xét" in d.page_source)
    _wait(browser).until(lambda d: _row(d, "labs-review", "SPC-UIR"))
    assert "cần xem xét" in _row(browser, "labs-review", "SPC-UIR").text
    Select(browser.find_element(By.ID, "lang")).select_by_value("en")


def test_an_engineer_sees_models_and_the_outbox(
    lab_server: LabServer, browser: Any, shots: Path
) -> None:
    sign_in(browser, lab_server.url, Role.engineer)
    nav = [a.get_attribute("id") for a in browser.find_elements(By.CSS_SELECTOR, "#nav a")]
    assert nav == ["nav-engineer"]
    model = _wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, 'tr[data-model="labs_anomaly"]'))
    )
    assert "verified" in model.text and "ready" in model.text
    assert "card metrics reproduced" in model.text  # the latest validation, linked
    link = model.find_element(By.CSS_SELECTOR, "a").get_attribute("href")
    assert link.endswith("/v1/models/labs_anomaly/validation")
    assert browser.find_element(By.ID, "eng-no-dead").is_displayed()
    browser.save_screenshot(str(shots / "engineer.png"))
