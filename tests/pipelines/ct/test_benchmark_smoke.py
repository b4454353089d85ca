"""benchmarks/ct.py still works (a smoke run on a small series; it measures nothing
that a test asserts beyond its shape)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_ct_benchmark_smoke(tmp_path: Path) -> None:
    out = tmp_path / "ct.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "ct.py"), "--smoke", "--no-http"]
    command += ["--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    for key in ("decode_s", "preprocess_s", "inference_s", "postprocess_s", "peak_rss_mb"):
        assert run[key] >= 0
    assert "| run |" in done.stdout
