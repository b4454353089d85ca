"""Durable file writes: the one atomic write that reports, the DICOM intake and the
outbox folder sink use.

A reader sees the old file or the new one, never half of one, and once `atomic_write`
returns the new file survives a crash: the data is fsynced before the rename, and the
folder after it (the rename lives in the folder's entry, not in the file).

Everything under var/ holds patient data (reports, uploads, the store's outbox), so
what these helpers create is the service user's alone: files 0600, folders 0700,
whatever the process umask (a umask can only take permissions away, never add them).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO


def fsync_folder(folder: Path) -> None:
    """Make the entries of `folder` (a rename, a new file or subfolder) durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FILE_MODE = 0o600
FOLDER_MODE = 0o700


def make_folders(folder: Path) -> None:
    """`mkdir -p`, each folder it creates 0700 and made durable in its parent."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(mode=FOLDER_MODE, exist_ok=True)  # another writer may have made it
        fsync_folder(created.parent)


def private_folder(folder: Path) -> Path:
    """`folder` made (as `make_folders`) and closed to others even if it was there
    before: what an older run left readable is not any more."""
    make_folders(folder)
    folder.chmod(FOLDER_MODE)
    return folder


def open_private(path: Path, mode: str = "ab") -> IO[bytes]:
    """`path` opened for writing (created 0600 if missing; an existing file is made
    0600 too), its folders made as by `make_folders`."""
    make_folders(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, mode)


def private_file(path: Path) -> Path:
    """`path` present and 0600 (an empty file if it was missing): e.g. a SQLite
    database before SQLite creates it, whose -wal and -shm files take its mode."""
    open_private(path).close()
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder (a rename across
    file systems would not be atomic); the temp file is removed if anything fails.
    mkstemp creates it 0600, and the rename keeps that mode."""
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
