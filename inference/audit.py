"""Audit trail: who touched which patient data, when, with what outcome.

One JSON line per access, to its own file. It names the actor (API key name and
role) and the resource by opaque id (report id, SOP Instance UID); never a patient's
name, birth date or the like.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, *, actor: str, role: str, action: str, resource: str, outcome: str) -> None:
        line = json.dumps(
            {
                "at": datetime.now(UTC).isoformat(),
                "actor": actor,
                "role": role,
                "action": action,
                "resource": resource,
                "outcome": outcome,
            }
        )
        with self._lock, self.path.open("a") as fh:
            fh.write(line + "\n")

    @contextmanager
    def access(self, *, actor: str, role: str, action: str, resource: str) -> Iterator[None]:
        """Record an access to patient data with its outcome (ok, or the error code)."""
        try:
            yield
        except Exception as exc:
            outcome = str(getattr(exc, "code", "error"))
            self.record(actor=actor, role=role, action=action, resource=resource, outcome=outcome)
            raise
        self.record(actor=actor, role=role, action=action, resource=resource, outcome="ok")
