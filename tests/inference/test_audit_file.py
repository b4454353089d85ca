"""The audit log's file: held open between entries, yet every entry lands in the file
at its path, 0600, even after the file was removed or moved away (log rotation)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

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
