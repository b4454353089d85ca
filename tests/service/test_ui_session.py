"""The review workspace's sign-in and safety, on a served app: the session cookie's
flags and expiry, the session acting as its key's role across the API, CSRF refusals
(also before a body is read), sign-out, the security headers, role-based navigation
and the owner-only, audited image layers of a real chest CR's report."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine

from aidx.inference.settings import Role, Settings
from aidx.inference.store import init_store
from aidx.service.app import create_app
from aidx.service.sessions import SESSION_COOKIE, SessionStore

from ..conftest import KEYS, auth, dicom_bytes, make_settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        tmp_path_factory.mktemp("ui"), enabled_models=["cxr_pneumonia"], writeback=False
    )


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(app_client: TestClient) -> TestClient:
    app_client.cookies.clear()
    return app_client


@pytest.fixture(scope="module")
def report(app_client: TestClient) -> dict[str, Any]:
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    answer = app_client.post("/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"), headers=headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def sign_in(client: TestClient, role: Role) -> dict[str, Any]:
    answer = client.post("/ui/session", headers=auth(role))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _audit(settings: Settings, action: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    return [e for e in lines if e["action"] == action]


def test_sign_in_sets_an_httponly_strict_expiring_cookie(
    client: TestClient, settings: Settings
) -> None:
    answer = client.post("/ui/session", headers=auth(Role.radiologist))
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/", f"max-age={8 * 3600}"} <= flags
    assert "secure" not in flags  # plain HTTP here; see the HTTPS test
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert (body["name"], body["role"], body["views"]) == ("radiologist-1", "radiologist",
                                                          ["cxr", "ct"])  # fmt: skip
    assert len(body["csrf_token"]) >= 32 and KEYS[Role.radiologist] not in answer.text
    assert _audit(settings, "ui.sign_in")[-1]["actor"] == "radiologist-1"
    assert client.get("/ui/session").json()["csrf_token"] == body["csrf_token"]


def test_over_https_the_cookie_is_secure(app_client: TestClient) -> None:
    secure = TestClient(app_client.app, base_url="https://testserver")
    answer = secure.post("/ui/session", headers=auth(Role.radiologist))
    assert "secure" in {p.strip().lower() for p in answer.headers["set-cookie"].split(";")}


def test_a_wrong_or_missing_key_opens_no_session(client: TestClient) -> None:
    wrong = client.post("/ui/session", headers={"Authorization": "Bearer not-a-key"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_api_key")
    assert "set-cookie" not in wrong.headers
    missing = client.post("/ui/session")
    assert (missing.status_code, missing.json()["code"]) == (401, "missing_api_key")
    nobody = client.get("/ui/session")
    assert (nobody.status_code, nobody.json()["code"]) == (401, "session_expired")


def test_the_session_acts_as_its_key_and_state_changes_need_the_csrf_token(
    client: TestClient, report: dict[str, Any]
) -> None:
    csrf = sign_in(client, Role.radiologist)["csrf_token"]
    rid = report["id"]
    assert client.get(f"/v1/reports/{rid}").status_code == 200  # the cookie alone reads
    body = {"answers": [{"finding": "Pneumonia", "verdict": "agree"}]}
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}):
        refused = client.post(f"/v1/reports/{rid}/feedback", json=body, headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (403, "csrf_failed"), headers
        assert refused.headers["connection"] == "close"  # refused before its body was read
    done = client.post(f"/v1/reports/{rid}/feedback", json=body, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    assert done.json()["current"][0]["by"] == "radiologist-1"
    # a state change without a body is refused by the route's own check
    assert client.delete("/ui/session").json()["code"] == "csrf_failed"


def test_sign_out_ends_the_session_everywhere(client: TestClient, settings: Settings) -> None:
    csrf = sign_in(client, Role.radiologist)["csrf_token"]
    token = client.cookies[SESSION_COOKIE]
    out = client.delete("/ui/session", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    assert (
        'aidx_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    )
    client.cookies.set(SESSION_COOKIE, token)  # a copy of the old cookie opens nothing
    gone = client.get("/v1/reports", params={"kind": "cxr"})
    assert (gone.status_code, gone.json()["code"]) == (401, "session_expired")
    assert _audit(settings, "ui.sign_out")[-1]["actor"] == "radiologist-1"


def test_a_session_expires_after_its_ttl(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'aidx.db'}")
    init_store(engine)
    now = [1_000.0]
    store = SessionStore(engine, ttl_s=60, clock=lambda: now[0])
    token, session = store.open("a" * 64)
    assert store.find(token) == session and session.expires_at_s == 1_060.0
    now[0] = 1_059.9
    assert store.find(token) is not None
    now[0] = 1_060.0
    assert store.find(token) is None
    store.open("b" * 64)  # opening sweeps the expired ones
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM ui_sessions").scalar() == 1


def test_the_workspace_is_served_with_a_strict_csp(client: TestClient) -> None:
    for path in ("/ui/", "/ui/js/app.js", "/ui/i18n/vi.json", "/ui/app.css"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    assert client.get("/ui/js/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/healthz").headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("role", "views"),
    [
        (Role.radiologist, ["cxr", "ct"]),
        (Role.pathologist, ["wsi"]),
        (Role.lab, ["labs"]),
        (Role.engineer, ["engineer"]),
        (Role.admin, ["cxr", "ct", "wsi", "labs", "engineer"]),
    ],
)
def test_each_role_sees_only_its_own_views(
    client: TestClient, role: Role, views: list[str]
) -> None:
    assert sign_in(client, role)["views"] == views


@pytest.mark.parametrize("role", [Role.lab, Role.pathologist])
def test_a_lab_technician_or_pathologist_never_sees_imaging(
    client: TestClient, report: dict[str, Any], settings: Settings, role: Role
) -> None:
    sign_in(client, role)
    rid = report["id"]
    for path in (
        "/v1/reports?kind=cxr",
        "/v1/reports?kind=ct",
        f"/v1/reports/{rid}",
        f"/v1/reports/{rid}/overlay.png",
        f"/v1/reports/{rid}/radiograph.png",
        f"/v1/reports/{rid}/heatmap.png",
    ):
        refused = client.get(path)
        assert (refused.status_code, refused.json()["code"]) == (403, "report_kind_not_allowed"), (
            path
        )
    refusals = [e for e in _audit(settings, "report.radiograph") if e["role"] == role.value]
    assert refusals[-1]["outcome"] == "report_kind_not_allowed"


def test_the_radiograph_and_heatmap_layers_are_pngs_of_one_size_and_audited(
    client: TestClient, report: dict[str, Any], settings: Settings
) -> None:
    sign_in(client, Role.radiologist)
    rid = report["id"]
    layers = {}
    for name, mode in (("radiograph", "L"), ("heatmap", "RGBA")):
        answer = client.get(f"/v1/reports/{rid}/{name}.png")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert answer.headers["cache-control"] == "private, no-store"
        image = Image.open(io.BytesIO(answer.content))
        assert image.mode == mode
        layers[name] = image
        assert _audit(settings, f"report.{name}")[-1] == {
            **_audit(settings, f"report.{name}")[-1], "actor": "radiologist-1",
            "resource": f"report/{rid}", "outcome": "ok",
        }  # fmt: skip
    assert layers["radiograph"].size == layers["heatmap"].size
    alpha = layers["heatmap"].getchannel("A")
    assert alpha.getextrema()[1] > 0  # a heat (or box) is drawn somewhere ...
    assert alpha.getextrema()[0] == 0  # ... over transparency
