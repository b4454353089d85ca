"""Sharing one report by a QR code: a signed, expiring, revocable, read-only link that
opens without a key, shows the findings and no more identity than the site chose,
audits every opening, and once expired, revoked or forged shows a page without data."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import segno
from fastapi.testclient import TestClient
from PIL import Image

from aidx.inference.settings import Role, Settings
from aidx.service.app import create_app
from aidx.service.share_page import masked_id

from ..conftest import auth, dicom_bytes, make_settings

PATIENT_NAME_PARTS = ("Anonymized",)  # RG1_UNCR's PatientName; it must never show


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        tmp_path_factory.mktemp("share"), enabled_models=["cxr_pneumonia"], writeback=False,
        ood_policy="warn",  # scored (with a warning), so the page shows probabilities
    )  # fmt: skip


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def report(client: TestClient) -> dict[str, Any]:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    answer = client.post("/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def share(client: TestClient, rid: str, **body: Any) -> dict[str, Any]:
    answer = client.post(f"/v1/reports/{rid}/shares", json=body, headers=auth(Role.radiologist))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def public(client: TestClient, url: str, **headers: str) -> Any:
    path = url[url.index("/share/") :]
    return client.get(path, headers=headers)  # no key, no cookie


def audit(settings: Settings, action: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    return [e for e in lines if e["action"] == action]


def test_a_link_opens_without_a_key_and_shows_the_findings(
    client: TestClient, report: dict[str, Any], settings: Settings
) -> None:
    link = share(client, report["id"])
    assert link["state"] == "live" and link["url"].startswith("http://testserver/share/")
    hours = (
        (time.mktime(time.strptime(link["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")))
        - time.mktime(time.strptime(link["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    ) / 3600
    assert round(hours) == 72
    client.cookies.clear()
    page = public(client, link["url"], **{"Accept-Language": "en-GB,en;q=0.9"})
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "<script" not in page.text
    html = page.text
    for finding in report["findings"]:
        assert f"finding.{finding['concept']['meaning']}" not in html  # translated
    assert "Pneumonia" in html and "%" in html
    # scored under AIDX_OOD_POLICY=warn: the patient is told the image is unlike the
    # training data before any finding
    assert report["ood"]["status"] == "out_of_distribution"
    assert 'id="share-ood"' in html and html.index("share-ood") < html.index("Pneumonia")
    patient_id = report["source"]["patient_id"]
    assert patient_id not in html and f"<dd>{masked_id(patient_id)}</dd>" in html
    assert not any(part in html for part in PATIENT_NAME_PARTS)
    opened = audit(settings, "share.open")[-1]
    assert opened["actor"] == f"share:{link['share_id']}" and opened["role"] == "public"
    assert opened["resource"] == f"report/{report['id']}" and opened["outcome"] == "ok"
    assert opened["client"] == "testclient"
    image = public(client, link["url"] + "/image.png")
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).format == "PNG"


def test_the_page_speaks_vietnamese_with_local_numbers(
    client: TestClient, report: dict[str, Any]
) -> None:
    link = share(client, report["id"])
    page = public(client, link["url"], **{"Accept-Language": "vi-VN,vi;q=0.9"})
    assert 'lang="vi"' in page.text and "Kết quả của bạn" in page.text
    assert "Viêm phổi" in page.text and "%" in page.text
    english = public(client, link["url"] + "?lang=en")
    assert 'lang="en"' in english.text and "Your result" in english.text


def test_a_revoked_link_shows_a_page_without_data(
    client: TestClient, report: dict[str, Any], settings: Settings
) -> None:
    link = share(client, report["id"])
    path = f"/v1/reports/{report['id']}/shares/{link['share_id']}"
    assert client.delete(path, headers=auth(Role.radiologist)).status_code == 204
    page = public(client, link["url"])
    assert page.status_code == 410 and "withdrawn" in page.text
    assert "Pneumonia" not in page.text and "•" not in page.text
    assert public(client, link["url"] + "/image.png").status_code == 410
    assert audit(settings, "share.open")[-1]["outcome"] == "revoked"
    listed = client.get(f"/v1/reports/{report['id']}/shares", headers=auth(Role.radiologist))
    states = {s["share_id"]: s["state"] for s in listed.json()}
    assert states[link["share_id"]] == "revoked"
    assert audit(settings, "share.revoke")[-1]["actor"] == "radiologist-1"


def test_an_expired_link_shows_a_page_without_data(
    client: TestClient, report: dict[str, Any]
) -> None:
    link = share(client, report["id"], ttl_s=60)
    shares = client.app.state.services.shares  # type: ignore[attr-defined]
    real_clock = shares.clock
    shares.clock = lambda: real_clock() + 61
    try:
        page = public(client, link["url"])
    finally:
        shares.clock = real_clock
    assert page.status_code == 410 and "expired" in page.text and "Pneumonia" not in page.text


def test_a_forged_or_altered_link_is_refused_and_counted(
    client: TestClient, report: dict[str, Any], settings: Settings
) -> None:
    link = share(client, report["id"])
    sid, signature = link["url"].rsplit("/", 1)[1].split(".")
    altered = link["url"].replace(signature, ("A" if signature[0] != "A" else "B") + signature[1:])
    for url in (altered, link["url"].replace(sid, "0" * len(sid)), "http://t/share/x"):
        page = public(client, url)
        assert page.status_code == 404 and "not valid" in page.text
        assert "Pneumonia" not in page.text
    assert any(e["outcome"] == "invalid_share_link" for e in audit(settings, "access.refused"))


def test_a_qr_code_of_the_link_for_the_report_readers_only(
    client: TestClient, report: dict[str, Any]
) -> None:
    link = share(client, report["id"])
    qr = client.get(link["qr_url"], headers=auth(Role.radiologist))
    assert qr.status_code == 200 and qr.headers["content-type"].startswith("image/svg+xml")
    expected = io.BytesIO()  # the very QR code of the link's URL
    segno.make(link["url"], error="m").save(expected, kind="svg", scale=6, border=4)
    assert qr.content == expected.getvalue() and b"xmlns" in qr.content
    rid = report["id"]
    for role in (Role.lab, Role.pathologist):
        assert client.get(link["qr_url"], headers=auth(role)).status_code == 403
        answer = client.post(f"/v1/reports/{rid}/shares", json={}, headers=auth(role))
        assert answer.status_code == 403
    assert client.post(f"/v1/reports/{rid}/shares", json={}).status_code == 401


def test_a_patient_id_is_masked_to_at_most_half_and_four_characters() -> None:
    assert masked_id("1234567890") == "••••7890"
    assert masked_id("9RG1") == "••G1"
    assert masked_id("7") == "•" and masked_id(None) is None


def test_the_share_length_is_capped(client: TestClient, report: dict[str, Any]) -> None:
    link = share(client, report["id"], ttl_s=10**9)
    days = (
        time.mktime(time.strptime(link["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        - time.mktime(time.strptime(link["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    ) / 86400
    assert round(days) == 30
