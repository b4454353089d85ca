"""Sign-in sessions of the review workspace (/ui/).

A clinician signs in with their API key once; the browser then holds only an opaque
session token in an HttpOnly, SameSite=Strict cookie. The store keeps the token's
SHA-256 (a leaked table opens no session), the SHA-256 of the key it acts as (so the
session has the key's role, and dies with the key), a CSRF token that every
state-changing request must echo in a header, and the expiry. Kept in the service's
store, so every replica sees every session and signing out ends it everywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine, delete, insert, select

from aidx.inference.errors import Forbidden, Unauthorized
from aidx.inference.schema import ui_sessions
from aidx.service.auth import KeyRing, Principal

SESSION_COOKIE = "aidx_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    key_sha256: str  # the API key it acts as
    csrf_token: str
    expires_at_s: float


class SessionStore:
    def __init__(
        self, engine: Engine, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.clock = clock

    def open(self, key_sha256: str) -> tuple[str, Session]:
        """A new session for the key: (the token for the cookie, the session). Expired
        sessions are swept on the way."""
        now = self.clock()
        token = secrets.token_urlsafe(32)
        session = Session(key_sha256, secrets.token_urlsafe(32), now + self.ttl_s)
        with self.engine.begin() as conn:
            conn.execute(delete(ui_sessions).where(ui_sessions.c.expires_at_s <= now))
            conn.execute(
                insert(ui_sessions).values(
                    token_sha256=_digest(token),
                    key_sha256=key_sha256,
                    csrf_token=session.csrf_token,
                    created_at_s=now,
                    expires_at_s=session.expires_at_s,
                )
            )
        return token, session

    def find(self, token: str) -> Session | None:
        """The live session of a cookie's token; None when unknown, closed or expired."""
        query = select(ui_sessions).where(ui_sessions.c.token_sha256 == _digest(token))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.expires_at_s <= self.clock():
            return None
        return Session(row.key_sha256, row.csrf_token, row.expires_at_s)

    def close(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(ui_sessions).where(ui_sessions.c.token_sha256 == _digest(token)))

    async def principal(self, request: Request, token: str, keyring: KeyRing) -> Principal:
        """Who a request with the session cookie `token` acts as: the session's key
        (401 `session_expired` once it has ended, `invalid_api_key` once the key is
        gone); a state-changing request must echo the CSRF token (403 `csrf_failed`)."""
        session = await asyncio.to_thread(self.find, token)
        if session is None:
            raise Unauthorized("the session has ended; sign in again", code="session_expired")
        principal = keyring.identify_digest(session.key_sha256)
        if request.method not in SAFE_METHODS:
            echoed = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(echoed.encode(), session.csrf_token.encode()):
                raise Forbidden("the request lacks the session's CSRF token", code="csrf_failed")
        return principal
