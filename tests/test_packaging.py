"""The package maps the top-level folders into aidx.* and ships every subpackage."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {
    "inference": "aidx.inference",
    "gpu": "aidx.gpu",
    "pipelines": "aidx.pipelines",
    "integrations": "aidx.integrations",
    "adapters": "aidx.adapters",
    "service": "aidx.service",
}


def source_packages() -> set[str]:
    """Every folder with an __init__.py under a mapped top-level folder, as aidx.* names."""
    names = set()
    for folder, package in TOP_LEVEL.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            names.add(".".join([package, *relative.parts]))
    return names


def test_nothing_leaks_to_the_top_level(tmp_path: Path) -> None:
    names = sorted(TOP_LEVEL)
    probe = f"import importlib.util as u; print([n for n in {names!r} if u.find_spec(n)])"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage_and_imports_from_itself(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("aidx-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "site")
    in_wheel = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("__init__.py")}
    assert source_packages() <= in_wheel, source_packages() - in_wheel
    assert not any(n.split("/")[0] in TOP_LEVEL for n in names)
    workspace = ["index.html", "app.css", "js/app.js", "i18n/en.json", "i18n/vi.json"]
    assert {f"aidx/service/ui/{f}" for f in workspace} <= set(names)  # the /ui/ files
    modules = sorted(
        n[:-3].replace("/", ".")
        for n in names
        if n.startswith("aidx/") and n.endswith(".py") and not n.endswith("__init__.py")
    )
    probe = (
        "import importlib, sys; site = sys.argv[1]\n"
        "for m in sys.argv[2:]:\n"
        "    mod = importlib.import_module(m)\n"
        "    assert mod.__file__.startswith(site), (m, mod.__file__)\n"
    )
    site = str(tmp_path / "site")
    subprocess.run(
        [sys.executable, "-c", probe, site, *modules],
        cwd=tmp_path,
        check=True,
        env={"PYTHONPATH": site, "PATH": "/usr/bin:/bin"},
    )
