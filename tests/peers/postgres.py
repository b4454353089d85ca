"""A real PostgreSQL for the store tests (Debian's `postgresql-15`, installed by
`make peers`): initdb into a fresh temporary directory, listening on 127.0.0.1 on a
free port (and a Unix socket inside that directory), trust authentication for the
local test role, fsync off. initdb refuses to run as root, so as root the cluster
belongs to the `postgres` system user (runuser). Stopped with `pg_ctl stop -m fast`."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from . import free_port

USER = "aidx"


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:  # initdb and postgres refuse root
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PostgresPeer:
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aidx-pg-")))
    bindir: Path | None = field(default_factory=pg_bindir)

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        assert self.bindir is not None
        subprocess.run(
            _as_owner([str(self.bindir / tool), *args]),
            check=True,
            capture_output=True,
            cwd=self.workdir,
        )

    def start(self) -> PostgresPeer:
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed: run `make peers`")
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.datadir), "-U", USER, "--auth=trust", "-E", "UTF8",
            "--no-sync", "--locale=C",
        )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.workdir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-o", options,
            "-l", str(self.workdir / "postgres.log"), "-w", "-t", "30", "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.datadir.exists():
            with contextlib.suppress(subprocess.CalledProcessError):  # not running
                self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
