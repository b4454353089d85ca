"""The one atomic write, on the real file system: the whole content or the old file,
never a temp file left behind, and both the file and its folder fsynced."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from aidx.inference.files import atomic_write


def test_the_file_holds_the_whole_content_and_nothing_else_is_left(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # several MiB: more than one write() of a buffered file
    atomic_write(tmp_path / "report.json", data)
    assert (tmp_path / "report.json").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_an_existing_file_is_replaced_not_rewritten_in_place(tmp_path: Path) -> None:
    path = tmp_path / "evidence.png"
    path.write_bytes(b"old" * 1000)
    with path.open("rb") as reader:  # a reader that opened the old file meanwhile
        atomic_write(path, b"new")
        assert reader.read() == b"old" * 1000  # still whole: a new inode took the name
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["evidence.png"]


def test_a_failed_write_leaves_no_temp_file_and_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "blocked"
    path.mkdir()  # a rename onto a non-empty folder fails after the data is written
    (path / "inside").write_bytes(b"kept")
    with pytest.raises(OSError):
        atomic_write(path, b"payload")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked"]
    assert (path / "inside").read_bytes() == b"kept"


def test_missing_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "incoming" / "1.2.3" / "1.2.3.4.dcm"
    atomic_write(path, b"DICM")
    assert path.read_bytes() == b"DICM"


def _spy_fsync(monkeypatch: pytest.MonkeyPatch) -> list[os.stat_result]:
    """Record what each fsync was called on; the real fsync still runs."""
    synced: list[os.stat_result] = []
    real: Callable[[int], None] = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def test_the_file_then_its_folder_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "new" / "out.hl7"
    synced = _spy_fsync(monkeypatch)
    atomic_write(path, b"MSH|^~\\&|")
    files = [s for s in synced if stat.S_ISREG(s.st_mode)]
    folders = [s for s in synced if stat.S_ISDIR(s.st_mode)]
    assert len(files) == 1 and _same(files[0], os.stat(path))  # the temp file, renamed
    assert any(_same(s, os.stat(path.parent)) for s in folders)  # the rename is durable
    assert any(_same(s, os.stat(tmp_path)) for s in folders)  # so is the new folder
    # The folder is synced after the rename: the last fsync is the file's folder.
    assert _same(synced[-1], os.stat(path.parent))
