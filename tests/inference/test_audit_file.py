"""The audit log's file: held open between entries, yet every entry lands in the file
at its path, 0600, even after the file was removed or moved away (log rotation); and
an access leaves its entry however it ends."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from aidx.inference.audit import AuditLog


def _record(log: AuditLog, actor: str) -> None:
    log.record(actor=actor, role="engineer", action="v2.infer", resource="model/m", outcome="ok")


def _actors(path: Path) -> list[str]:
    return [json.loads(line)["actor"] for line in path.read_text().splitlines()]


def test_entries_follow_the_path_through_removal_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.log"
    log = AuditLog(path)
    _record(log, "a")
    _record(log, "b")
    assert _actors(path) == ["a", "b"]
    path.rename(tmp_path / "audit" / "audit.log.1")  # rotated
    _record(log, "c")
    assert _actors(path) == ["c"]
    assert _actors(tmp_path / "audit" / "audit.log.1") == ["a", "b"]
    path.unlink()  # removed, folder and all
    path.parent.joinpath("audit.log.1").unlink()
    path.parent.rmdir()
    _record(log, "d")
    assert _actors(path) == ["d"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_cancelled_access_is_recorded_as_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)

    async def scenario() -> None:
        inside = asyncio.Event()

        async def access() -> None:
            with log.access(actor="a", role="engineer", action="v2.infer", resource="model/m"):
                inside.set()  # the data was received
                await asyncio.Event().wait()  # the client goes away before the answer

        task = asyncio.ensure_future(access())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # cancellation still propagates
            await task

    asyncio.run(scenario())
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["actor"], e["resource"], e["outcome"]) for e in entries] == [
        ("a", "model/m", "cancelled")
    ]
