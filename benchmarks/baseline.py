"""Another revision's code, importable as `aidx` ahead of this checkout's, so a
benchmark can measure before and after in one run on the same machine:

    python benchmarks/ct.py --baseline main

`git archive REF` is unpacked into a temporary folder and laid out as the `aidx`
namespace (the same folder mapping as pyproject's package-dir); a child process run
with PYTHONPATH set to it imports that revision's aidx instead of this one.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("inference", "service", "adapters", "pipelines", "integrations", "gpu")


def checkout(ref: str, into: Path) -> Path:
    """REF's code under `into`; returns the folder to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
    ).stdout
    source = into / "source"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    package = into / "aidx"
    package.mkdir(parents=True)
    for name in PACKAGES:
        if (source / name).is_dir():
            (package / name).symlink_to(source / name)
    return into


def environment(path: Path | None) -> dict[str, str]:
    """The child's environment: this checkout's aidx (None) or the one at `path`."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    return env
