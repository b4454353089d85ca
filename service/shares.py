"""Read-only share links to one report, for a QR code: a patient opens the result on a
phone, a doctor at another hospital sees it without an account.

A link is `/share/<share_id>.<signature>`: the signature is an HMAC of the share's row
(its id, report and expiry) under the service's share secret, so a forged or altered
token is refused before anything is read, and a leaked store alone mints no link. The
row is what makes a link revocable and lets the owner see and end its links. The token
itself is never stored: the server can redraw the QR code from the row and the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine, insert, select, update

from aidx.inference.files import atomic_write
from aidx.inference.schema import report_shares


@dataclass(frozen=True)
class Share:
    share_id: str
    report_id: str
    created_by: str
    created_at_s: float
    expires_at_s: float
    revoked_at_s: float | None = None
    revoked_by: str | None = None

    def state(self, now_s: float) -> str:
        """live | expired | revoked"""
        if self.revoked_at_s is not None:
            return "revoked"
        return "expired" if now_s >= self.expires_at_s else "live"


def share_secret(configured: SecretStr | None, var_dir: Path) -> bytes:
    """The configured secret (every replica must share it), else one kept in var/ (0600),
    made on first use: links then stay valid across restarts of a single server."""
    if configured is not None:
        return configured.get_secret_value().encode()
    path = var_dir / "share.key"
    if not path.exists():
        atomic_write(path, secrets.token_bytes(32))  # 0600
    return path.read_bytes()


class ShareStore:
    def __init__(self, engine: Engine, secret: bytes, clock: Callable[[], float] = time.time):
        self.engine = engine
        self._secret = secret
        self.clock = clock

    def create(self, report_id: str, created_by: str, ttl_s: float) -> Share:
        now = self.clock()
        share = Share(secrets.token_hex(8), report_id, created_by, now, now + ttl_s)
        with self.engine.begin() as conn:
            conn.execute(
                insert(report_shares).values(
                    share_id=share.share_id,
                    report_id=report_id,
                    created_by=created_by,
                    created_at_s=share.created_at_s,
                    expires_at_s=share.expires_at_s,
                )
            )
        return share

    def token(self, share: Share) -> str:
        return f"{share.share_id}.{self._signature(share)}"

    def find(self, share_id: str) -> Share | None:
        query = select(report_shares).where(report_shares.c.share_id == share_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else Share(**row._mapping)

    def verify(self, token: str) -> Share | None:
        """The share a link's token names, if its signature holds (else None: forged,
        altered, or signed under another secret). Its state is for the caller to judge."""
        share_id, _, signature = token.partition(".")
        if not share_id.isalnum() or len(share_id) > 32 or not signature:
            return None
        share = self.find(share_id)
        if share is None or not hmac.compare_digest(signature, self._signature(share)):
            return None
        return share

    def for_report(self, report_id: str) -> list[Share]:
        query = (
            select(report_shares)
            .where(report_shares.c.report_id == report_id)
            .order_by(report_shares.c.created_at_s.desc())
        )
        with self.engine.connect() as conn:
            return [Share(**row._mapping) for row in conn.execute(query)]

    def revoke(self, share_id: str, revoked_by: str) -> bool:
        """True when the share was live and is revoked now (a second revoke is a no-op)."""
        query = (
            update(report_shares)
            .where(report_shares.c.share_id == share_id, report_shares.c.revoked_at_s.is_(None))
            .values(revoked_at_s=self.clock(), revoked_by=revoked_by)
        )
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount == 1

    def _signature(self, share: Share) -> str:
        signed = f"{share.share_id}|{share.report_id}|{share.expires_at_s!r}".encode()
        digest = hmac.new(self._secret, signed, hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

