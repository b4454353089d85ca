"""API keys with roles. A key is presented as `Authorization: Bearer <key>` or
`X-API-Key: <key>`; only its SHA-256 is ever compared or stored."""

from __future__ import annotations

import hmac
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from fastapi import Request

from aidx.inference.errors import Forbidden, Unauthorized
from aidx.inference.key_policy import POLICY, weakness
from aidx.inference.settings import ApiKey, Mode, Role, Settings, hash_key


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


class KeyRing:
    """The configured keys by hash. With `enforce_policy` (production), a key that
    matches but fails the key policy (key_policy.py) is refused: only hashes are
    configured, so this is where a weak key can be seen."""

    def __init__(self, keys: list[ApiKey], *, enforce_policy: bool = False) -> None:
        self.enforce_policy = enforce_policy
        self._by_hash: dict[str, ApiKey] = {}
        # digests of presented keys that matched and passed the policy: a key in use is
        # checked once, not on every request (only configured keys can get in, so the
        # cache is as small as the key list; it holds digests, never keys)
        self._accepted: dict[str, Principal] = {}
        for key in keys:
            seen = self._by_hash.setdefault(key.key_sha256, key)
            if seen is not key:
                raise ValueError(
                    f"API keys {seen.name!r} and {key.name!r} are the same key; "
                    "give each client its own"
                )

    def identify(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized(
                "an API key is required (Authorization: Bearer <key>)", code="missing_api_key"
            )
        digest = hash_key(presented)
        accepted = self._accepted.get(digest)
        if accepted is not None:
            return accepted
        principal = self.identify_digest(digest)
        why = weakness(presented) if self.enforce_policy else None
        if why is not None:
            raise Unauthorized(
                f"the API key is too weak for production ({why}); the policy: {POLICY}",
                code="weak_api_key",
            )
        self._accepted[digest] = principal
        return principal

    def identify_digest(self, digest: str) -> Principal:
        """The principal of a key known by its SHA-256 (the key a sign-in session of
        the review workspace acts as: service/sessions.py)."""
        for known, key in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return Principal(key.name, key.role)
        raise Unauthorized("the API key is not valid", code="invalid_api_key")


def keyring_for(settings: Settings) -> KeyRing:
    """The configured keys; in development mode also one admin key, printed once."""
    keys = list(settings.api_keys)
    if settings.mode is Mode.development:
        dev_key = settings.dev_api_key or secrets.token_urlsafe(32)
        keys.append(ApiKey(name="development", role=Role.admin, key_sha256=hash_key(dev_key)))
        if settings.dev_api_key is None:
            print(f"aidx development API key (admin, shown once): {dev_key}", file=sys.stderr)
    return KeyRing(keys, enforce_policy=settings.mode is Mode.production)


def presented_key(request: Request) -> str | None:
    return key_in(request.headers)


def key_in(headers: Mapping[str, str]) -> str | None:
    """The key in HTTP headers or gRPC metadata (whose names are lower case)."""
    header = headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return headers.get("x-api-key")


def authorize(keyring: KeyRing, presented: str | None, roles: Iterable[Role]) -> Principal:
    """The caller's principal, if its role is one of `roles` (admin may do anything):
    the one check behind every route and RPC that needs a key."""
    principal = keyring.identify(presented)
    if principal.role not in {*roles, Role.admin}:
        raise Forbidden(
            f"role {principal.role.value!r} may not use this route", code="role_not_allowed"
        )
    return principal


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, if its role may use the route.
    Admin may use every route. Refusals are throttled and audited (access.py)."""
    allowed = frozenset(roles)

    # async on purpose: FastAPI runs a sync dependency in a worker thread, a costly
    # hop on every request of the hot /v2 path.
    async def dependency(request: Request) -> Principal:
        gate = request.app.state.services.access
        principal: Principal = await gate.authenticate_request(request)
        gate.authorize(request, principal, allowed)
        request.state.principal = principal
        return principal

    return dependency
