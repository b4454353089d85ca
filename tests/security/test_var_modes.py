"""Everything under var/ (the store and its -wal/-shm, audit.log, reports and their
evidence, the outbox folder sink) is the service user's alone, whatever the umask:
files 0600, folders 0700 (tested with umask 000, the worst a process can have)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from aidx.inference.files import atomic_write, open_private, private_file
from aidx.inference.store import create_store
from aidx.service.app import create_app
from tests.conftest import dicom_bytes, make_settings

from .conftest import cxr


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    found = {str(root): stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> None:
    for name, mode in modes(root).items():
        wanted = 0o700 if (root / name).is_dir() else 0o600
        assert mode == wanted, f"{name}: {oct(mode)}"


@pytest.mark.usefixtures("open_umask")
def test_var_holds_only_private_files_and_folders_after_real_work(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    settings = make_settings(var_dir, enabled_models=["cxr_pneumonia"])
    with TestClient(create_app(settings)) as client:
        response = cxr(client, dicom_bytes("RG1_UNCR.dcm"))
        assert response.status_code == 200, response.text
        rid = response.json()["id"]
        names = set(modes(var_dir))
        assert {"aidx.db", "aidx.db-wal", "aidx.db-shm", "audit.log"} <= names
        assert any(n.startswith(f"reports/{rid}/") for n in names)
        assert_private(var_dir)
    assert_private(var_dir)


@pytest.mark.usefixtures("open_umask")
def test_what_an_older_run_left_open_is_closed_at_start(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    var_dir.mkdir(mode=0o755)
    (var_dir / "aidx.db").touch(mode=0o644)
    (var_dir / "audit.log").write_text("")
    (var_dir / "audit.log").chmod(0o644)
    with TestClient(create_app(make_settings(var_dir, enabled_models=["cxr_pneumonia"]))):
        assert stat.S_IMODE(var_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((var_dir / "aidx.db").stat().st_mode) == 0o600
        assert stat.S_IMODE((var_dir / "aidx.db-wal").stat().st_mode) == 0o600


@pytest.mark.usefixtures("open_umask")
def test_the_file_helpers_ignore_the_umask(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a" / "b" / "report.json", b"{}")
    with open_private(tmp_path / "c" / "audit.log") as fh:
        fh.write(b"line\n")
    private_file(tmp_path / "d" / "x.db")
    engine = create_store(f"sqlite:///{tmp_path / 'e' / 'store.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x)")
        conn.commit()
    engine.dispose()
    tmp_path.chmod(0o700)
    assert_private(tmp_path)
