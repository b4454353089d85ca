"""The production key policy (inference/key_policy.py): length and entropy where a
key is seen in full, placeholders and shared keys refused at start-up, and no key
material in any message."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from aidx.inference.errors import Unauthorized
from aidx.inference.key_policy import MIN_KEY_LENGTH, bits_per_char, weakness
from aidx.inference.settings import ApiKey, Role, Settings, hash_key
from aidx.service.auth import KeyRing, keyring_for
from aidx.service.cli import app as cli


def _key(name: str, role: Role, key: str) -> ApiKey:
    return ApiKey(name=name, role=role, key_sha256=hash_key(key))


@pytest.mark.parametrize(
    "key",
    ["x", "Changeme", "changeme-changeme-changeme-changeme", "a" * 64, "ab" * 32, "0123456789" * 3],
)
def test_short_or_repetitive_keys_fail_the_policy(key: str) -> None:
    assert weakness(key) is not None
    ring = KeyRing([_key("weak", Role.lab, key)], enforce_policy=True)
    with pytest.raises(Unauthorized) as refused:
        ring.identify(key)
    assert refused.value.code == "weak_api_key"
    assert len(key) < 4 or key not in refused.value.message


def test_random_keys_pass_the_policy() -> None:
    for key in (secrets.token_urlsafe(32), secrets.token_hex(16), secrets.token_hex(32)):
        assert len(key) >= MIN_KEY_LENGTH and weakness(key) is None, key
    assert bits_per_char(secrets.token_urlsafe(32)) > 4.5


def test_development_mode_does_not_enforce_the_policy() -> None:
    ring = KeyRing([_key("dev", Role.admin, "short")], enforce_policy=False)
    assert ring.identify("short").role is Role.admin


@pytest.mark.parametrize("placeholder", ["x", "Changeme", "CHANGEME", "Password", "admin"])
def test_well_known_placeholders_stop_the_start(placeholder: str) -> None:
    with pytest.raises(ValidationError, match="well-known default"):
        Settings(mode="production", api_keys=[_key("gw", Role.radiologist, placeholder)])  # type: ignore[arg-type]


def test_one_key_under_two_entries_stops_the_start_naming_the_entries_only() -> None:
    key = secrets.token_urlsafe(32)
    shared = [_key("pacs", Role.radiologist, key), _key("lis", Role.lab, key)]
    with pytest.raises(ValidationError) as refused:
        Settings(mode="production", api_keys=shared)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "'pacs' (radiologist) and 'lis' (lab) are the same key" in message
    assert hash_key(key) not in message and key not in message


def test_the_development_key_shared_with_a_configured_key_is_refused() -> None:
    key = secrets.token_urlsafe(32)
    settings = Settings(mode="development", dev_api_key=key, api_keys=[_key("a", Role.lab, key)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same key") as refused:
        keyring_for(settings)
    assert key not in str(refused.value)


def test_no_refusal_echoes_the_development_key(monkeypatch: pytest.MonkeyPatch) -> None:
    dev_key = "dev-key-with-a-recognisable-tail-QX7Z9"
    strong = _key("gw", Role.radiologist, secrets.token_urlsafe(32))
    with pytest.raises(ValidationError) as refused:
        Settings(mode="production", api_keys=[strong], dev_api_key=dev_key)  # type: ignore[arg-type]
    assert "development mode only" in str(refused.value)
    assert "QX7Z9" not in str(refused.value) and strong.key_sha256 not in str(refused.value)
    monkeypatch.setenv("AIDX_MODE", "production")
    monkeypatch.setenv("AIDX_DEV_API_KEY", dev_key)
    with pytest.raises(ValidationError) as from_env:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "QX7Z9" not in str(from_env.value)


def test_keys_new_makes_a_key_that_passes_and_its_entry() -> None:
    result = CliRunner().invoke(cli, ["keys", "new", "pacs-gateway", "radiologist"])
    assert result.exit_code == 0, result.output
    key = result.output.split("key (shown once): ")[1].split()[0]
    assert weakness(key) is None and hash_key(key) in result.output
    assert '"role": "radiologist"' in result.output


def test_a_key_checked_once_is_answered_from_its_digest_and_a_weak_one_never() -> None:
    strong, weak = secrets.token_urlsafe(32), "ab" * 32
    ring = KeyRing(
        [_key("strong", Role.engineer, strong), _key("weak", Role.lab, weak)], enforce_policy=True
    )
    assert ring.identify(strong) is ring.identify(strong)  # the second from the cache
    assert strong not in repr(vars(ring))  # the cache holds digests, never keys
    for _ in range(2):  # refused each time: a weak key is never cached
        with pytest.raises(Unauthorized, match="too weak"):
            ring.identify(weak)
    with pytest.raises(Unauthorized) as refused:
        ring.identify(strong[:-1] + ("A" if strong[-1] != "A" else "B"))
    assert refused.value.code == "invalid_api_key"
