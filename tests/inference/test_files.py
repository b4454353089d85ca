"""The one atomic write, on the real file system: the whole content or the old file,
never a temp file left behind, and both the file and its folder fsynced."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
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


def _fsynced_paths(path: Path, data: bytes) -> list[str]:
    """The paths fsync was called on, in order, as the kernel saw them: atomic_write
    runs in a child process under strace (no patching of os.fsync)."""
    code = (
        f"from pathlib import Path; from aidx.inference.files import atomic_write; "
        f"atomic_write(Path({str(path)!r}), {data!r})"
    )
    trace = subprocess.run(
        ["strace", "-f", "-y", "-e", "trace=fsync", sys.executable, "-c", code],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return re.findall(r"fsync\(\d+<([^>]*)>\)\s+= 0", trace.stderr)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace (Debian) is not installed")
def test_the_file_then_its_folder_are_fsynced(tmp_path: Path) -> None:
    path = tmp_path / "new" / "out.hl7"
    synced = _fsynced_paths(path, b"MSH|^~\\&|")
    files = [p for p in synced if Path(p).parent == path.parent and p != str(path.parent)]
    assert len(files) == 1 and Path(files[0]).name.startswith(".out.hl7.")  # the temp file
    assert str(path.parent) in synced  # the rename is durable
    assert str(tmp_path) in synced  # so is the new folder
    # The folder is synced after the rename: the last fsync is the file's folder.
    assert synced[-1] == str(path.parent)
    assert path.read_bytes() == b"MSH|^~\\&|"
