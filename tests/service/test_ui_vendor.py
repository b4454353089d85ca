"""The workspace's npm libraries: OpenSeadragon, pinned by service/ui_vendor's lock file,
installed by the Makefile into service/ui/vendor/ and served under /ui/vendor/; the
CSP allows its one inline style by hash and nothing else inline (no blob:, data:)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil

import pytest
from fastapi.testclient import TestClient

from aidx.service.routes.ui import UI_DIR
from aidx.service.security_headers import CSP, OPENSEADRAGON_STYLE_SHA256

NPM_DIR = UI_DIR.parent / "ui_vendor"
OSD = UI_DIR / "vendor" / "openseadragon" / "openseadragon.min.js"


@pytest.fixture(scope="module")
def osd_source() -> str:
    if not OSD.is_file():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: the Makefile cannot install OpenSeadragon")
        pytest.fail("OpenSeadragon is not installed: run `make install`")
    return OSD.read_text(encoding="utf-8")


def test_the_served_openseadragon_is_the_locked_version(osd_source: str) -> None:
    lock = json.loads((NPM_DIR / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/openseadragon"]
    assert json.loads((NPM_DIR / "package.json").read_text())["dependencies"] == {
        "openseadragon": locked["version"]
    }  # pinned exactly, and the lock agrees
    assert locked["integrity"].startswith("sha512-")
    assert f"versionStr:\"{locked['version']}\"" in osd_source.replace("'", '"')


def test_the_csp_allows_only_openseadragons_own_inline_style(osd_source: str) -> None:
    match = re.search(r'textContent=((?:"[^"]*"\+?)+)', osd_source)
    assert match is not None
    style = "".join(re.findall(r'"([^"]*)"', match.group(1)))
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert digest == OPENSEADRAGON_STYLE_SHA256
    assert f"style-src 'self' 'sha256-{digest}';" in CSP
    for loose in ("unsafe-inline", "unsafe-eval", "blob:", "data:", "*"):
        assert loose not in CSP


def test_the_viewer_is_served_under_ui_vendor(osd_source: str, client: TestClient) -> None:
    answer = client.get("/ui/vendor/openseadragon/openseadragon.min.js")
    assert answer.status_code == 200 and answer.text == osd_source
    assert answer.headers["content-security-policy"] == CSP
    assert client.get("/ui/vendor/openseadragon/images/home_rest.png").status_code == 200
