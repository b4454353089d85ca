"""Audit trail: who touched which patient data, when, with what outcome.

One JSON line per access, to its own file (0600). It names the actor (API key name
and role), the client's address where there is one, and the resource by opaque id
(report id, SOP Instance UID); never a patient's name, birth date or the like.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

from aidx.inference.files import make_folders, open_private

# The address of the client whose request is being served (set once it has been
# authenticated): every entry recorded while serving it names it.
current_client: ContextVar[str | None] = ContextVar("aidx_audit_client", default=None)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        make_folders(path.parent)
        self._lock = threading.Lock()

    def record(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        resource: str,
        outcome: str,
        client: str | None = None,
    ) -> None:
        entry = {
            "at": datetime.now(UTC).isoformat(),
            "actor": actor,
            "role": role,
            "action": action,
            "resource": resource,
            "outcome": outcome,
        }
        client = client if client is not None else current_client.get()
        if client is not None:
            entry["client"] = client
        line = json.dumps(entry) + "\n"
        with self._lock, open_private(self.path) as fh:
            fh.write(line.encode())

    @contextmanager
    def access(
        self, *, actor: str, role: str, action: str, resource: str, client: str | None = None
    ) -> Iterator[None]:
        """Record an access to patient data with its outcome (ok, or the error code)."""
        where = {"actor": actor, "role": role, "action": action, "resource": resource}
        try:
            yield
        except Exception as exc:
            self.record(**where, outcome=str(getattr(exc, "code", "error")), client=client)
            raise
        self.record(**where, outcome="ok", client=client)
