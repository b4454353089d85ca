"""Settings refuse insecure defaults outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aidx.inference.errors import Unauthorized
from aidx.inference.settings import ApiKey, Role, Settings, hash_key
from aidx.service.auth import keyring_for


def test_production_without_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIDX_MODE", raising=False)
    with pytest.raises(ValidationError, match="no API keys configured"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_well_known_default_key_is_refused() -> None:
    weak = ApiKey(name="x", role=Role.admin, key_sha256=hash_key("changeme"))
    with pytest.raises(ValidationError, match="well-known default"):
        Settings(mode="production", api_keys=[weak])  # type: ignore[arg-type]


def test_a_development_key_outside_development_is_refused() -> None:
    strong = ApiKey(name="x", role=Role.admin, key_sha256=hash_key("k" * 40))
    with pytest.raises(ValidationError, match="development mode only"):
        Settings(mode="production", api_keys=[strong], dev_api_key="d" * 40)  # type: ignore[arg-type]


def test_keys_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "a-random-key-for-the-pacs-router-0001"
    monkeypatch.setenv(
        "AIDX_API_KEYS",
        f'[{{"name": "pacs", "role": "radiologist", "key_sha256": "{hash_key(key)}"}}]',
    )
    settings = Settings(mode="production")  # type: ignore[arg-type]
    principal = keyring_for(settings).identify(key)
    assert principal.name == "pacs" and principal.role is Role.radiologist


def test_development_mode_creates_a_key_and_prints_it_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ring = keyring_for(Settings(mode="development"))  # type: ignore[arg-type]
    printed = capsys.readouterr().err
    key = printed.strip().rsplit(" ", 1)[-1]
    assert "shown once" in printed and len(key) >= 32
    assert ring.identify(key).role is Role.admin
    with pytest.raises(Unauthorized):
        ring.identify("guess")
