"""Benchmarks measure; the suite only proves each still runs (a few seconds each)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def smoke(script: str, out: Path, *extra: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(out.read_text())


def test_batching_benchmark_runs(tmp_path: Path) -> None:
    saved = smoke("batching.py", tmp_path / "batching.json")
    paths = {row["path"] for row in saved["rows"]}
    assert paths == {
        "raw onnxruntime",
        "batcher in-process (no HTTP)",
        "/v2 infer (tritonclient, binary)",
        "/v1/cxr (DICOM end to end)",
    }
    assert all(row["requests"] > 0 for row in saved["rows"])


def test_v2_cost_benchmark_runs(tmp_path: Path) -> None:
    saved = smoke("v2_cost.py", tmp_path / "v2_cost.json", "--floor")
    assert [row["protocol"] for row in saved["rows"]] == ["http", "grpc"]
    for row in saved["rows"]:
        assert row["requests"] > 0
        assert row["server_cpu_ms_per_req"] > 0 < row["model_cpu_ms_per_item"]
        assert row["client_cpu_ms_per_req"] > 0 < row["bound_pct_of_raw"]
    # the do-nothing servers answered every request, and cost less than aidx's front end
    assert [floor["protocol"] for floor in saved["floor"]] == ["http", "grpc"]
    for floor in saved["floor"]:
        assert floor["requests"] > 0 < floor["throughput_rps"]
        assert floor["floor_bound_pct_of_raw"] > floor["aidx_bound_pct_of_raw"]


def test_labs_benchmark_runs(tmp_path: Path) -> None:
    smoke("labs.py", tmp_path / "labs.json")


def test_wsi_benchmark_runs(tmp_path: Path) -> None:
    smoke("wsi.py", tmp_path / "wsi.json", "--sizes", "8192")


def test_triton_benchmark_runs(tmp_path: Path) -> None:
    """aidx in-process vs aidx -> a real Triton (the .peers/pytriton peer): ~20 s."""
    saved = smoke("triton.py", tmp_path / "triton.json")
    paths = {row["path"] for row in saved["rows"]}
    assert paths == {
        "/v1/cxr · aidx in-process",
        "/v2 infer · aidx in-process",
        "/v1/cxr · aidx → Triton",
        "/v2 infer · aidx → Triton",
        "/v2 gRPC · aidx in-process",
        "/v2 gRPC · aidx → Triton",
        "Triton alone (tritonclient)",
        "Triton alone (tritonclient gRPC)",
    }
    assert all(row["requests"] > 0 for row in saved["rows"])


def test_batch_knee_benchmark_runs(tmp_path: Path) -> None:
    saved = smoke("batch_knee.py", tmp_path / "batch_knee.json")
    assert [run["cut_at_knee"] for run in saved["runs"]] == [False, True]
    assert all(run["items"] > 0 for run in saved["runs"])


def test_soak_benchmark_runs(tmp_path: Path) -> None:
    """Mixed load on a real server with real Orthanc and FHIR peers, a kill -9 half-way:
    nothing lost, nothing twice (~30 s on a quiet machine; the 10-minute run is manual)."""
    saved = smoke("soak.py", tmp_path / "soak.json")
    assert saved["errors"] == {}
    assert saved["exactly_once"]["ok"], saved["exactly_once"]
    assert saved["wsi_job"] == "succeeded"
    assert saved["sent"].get("cxr", 0) > 0 and saved["sent"].get("labs", 0) > 0


def test_cxr_decode_benchmark_runs_before_and_after(tmp_path: Path) -> None:
    """With the baseline built from this repository's HEAD: the same pixels twice."""
    saved = smoke("cxr_decode.py", tmp_path / "cxr_decode.json", "--baseline", "HEAD")
    assert saved["before"]["sha256"] == saved["after"]["sha256"]
    assert saved["before"]["viewer_sha256"] == saved["after"]["viewer_sha256"]
    assert set(saved["after"]["ms"]) == {
        "decode_radiograph", "to_display", "save_full_image", "viewer_first_get"
    }  # fmt: skip


def test_shadow_benchmark_runs(tmp_path: Path) -> None:
    saved = smoke("shadow.py", tmp_path / "shadow.json")
    paths = {row["path"] for row in saved["rows"]}
    assert paths == {
        "batcher in-process, no shadow",
        "batcher in-process, shadow v2",
        "/v1/cxr, no shadow",
        "/v1/cxr, shadow v2",
    }
    assert all(row["requests"] > 0 for row in saved["rows"])


def test_cxr_cost_benchmark_runs(tmp_path: Path) -> None:
    """`aidx serve`, 3 /v1/cxr posts each with its write-back drained: ~40 s."""
    saved = smoke("cxr_cost.py", tmp_path / "cxr_cost.json")
    (summary,) = saved["summary"].values()
    assert summary["request_cpu_ms"] > 0 < summary["outbox_cpu_ms"]
    assert len(saved["raw"]["this"]["rows"]["request"]) == 3
