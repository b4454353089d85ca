"""Durable file writes: the one atomic write that reports, the DICOM intake and the
outbox folder sink use.

A reader sees the old file or the new one, never half of one, and once `atomic_write`
returns the new file survives a crash: the data is fsynced before the rename, and the
folder after it (the rename lives in the folder's entry, not in the file).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_folder(folder: Path) -> None:
    """Make the entries of `folder` (a rename, a new file or subfolder) durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folders(folder: Path) -> None:
    """`mkdir -p`, with each folder it creates made durable in its parent."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)  # another writer may have made it meanwhile
        fsync_folder(created.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder (a rename across
    file systems would not be atomic); the temp file is removed if anything fails."""
    make_folders(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
