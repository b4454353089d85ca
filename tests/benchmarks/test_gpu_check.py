"""benchmarks/gpu_check.py: without a GPU it says so and exits 0; its comparison,
throughput and service-gain steps work (run here on CPU sessions standing in)."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from aidx.gpu.providers import CPU, CUDA, cuda_device_count
from aidx.inference.repository import load_entry

from ..conftest import MODELS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def gpu_check():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks/gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a CUDA device")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout
    assert '"no_gpu"' in out.read_text()


def test_its_steps_work_on_stand_in_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    bench = gpu_check()
    entry = load_entry(MODELS / "cxr_pneumonia")
    session = ort.InferenceSession(str(entry.model_path), providers=[CPU])
    made = {CPU: session, CUDA: session}  # the "GPU" is the CPU: errors are exactly 0
    comparisons = bench.compare(entry, made)
    assert {c.output for c in comparisons} == {"logits", "cam"}
    assert all(c.ok and c.error == 0 for c in comparisons)
    rows = bench.throughput(entry, {CPU: session}, 0.01)
    assert [r.batch for r in rows] == [1, 8, 32, 128]
    gain = asyncio.run(bench.service_gain(MODELS, "cxr_pneumonia", 0.3, 8, device="cpu"))
    assert gain.provider == CPU and gain.mean_batch >= 1
    results = bench.Results("none", ort.__version__, [CPU], comparisons, rows, [gain])
    bench.print_tables(results)
    assert "batching gain" in capsys.readouterr().out
