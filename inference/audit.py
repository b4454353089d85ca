"""Audit trail: who touched which patient data, when, with what outcome.

One JSON line per access, to its own file (0600). It names the actor (API key name
and role), the client's address where there is one, and the resource by opaque id
(report id, SOP Instance UID); never a patient's name, birth date or the like.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

from aidx.inference.files import FILE_MODE, make_folders

# The address of the client whose request is being served (set once it has been
# authenticated): every entry recorded while serving it names it.
current_client: ContextVar[str | None] = ContextVar("aidx_audit_client", default=None)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        make_folders(path.parent)
        self._lock = threading.Lock()
        self._fd: int | None = None  # held open: an open per entry cost more than the entry
        self._file_id: tuple[int, int] | None = None
        weakref.finalize(self, _close_held, self.__dict__)

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
        with self._lock:
            os.write(self._held_fd(), line.encode())  # O_APPEND: one write, one whole line

    def _held_fd(self) -> int:
        """The log's descriptor, opened again (0600, folders made) when the file at
        `path` is no longer the one held: removed, or moved away by log rotation."""
        try:
            stat = os.stat(self.path)
            same = (stat.st_dev, stat.st_ino) == self._file_id
        except FileNotFoundError:
            same = False
        if self._fd is None or not same:
            _close_held(self.__dict__)
            make_folders(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            os.fchmod(fd, FILE_MODE)
            stat = os.fstat(fd)
            self._fd, self._file_id = fd, (stat.st_dev, stat.st_ino)
        return self._fd

    @contextmanager
    def access(
        self, *, actor: str, role: str, action: str, resource: str, client: str | None = None
    ) -> Iterator[None]:
        """Record an access to patient data with its outcome (ok, the error code, or
        cancelled)."""
        where = {"actor": actor, "role": role, "action": action, "resource": resource}
        try:
            yield
        except Exception as exc:
            self.record(**where, outcome=str(getattr(exc, "code", "error")), client=client)
            raise
        except asyncio.CancelledError:  # not an Exception; the data was received all the same
            self.record(**where, outcome="cancelled", client=client)
            raise
        self.record(**where, outcome="ok", client=client)


def _close_held(state: dict[str, object]) -> None:
    fd = state.get("_fd")
    if isinstance(fd, int):
        os.close(fd)
    state["_fd"] = None
