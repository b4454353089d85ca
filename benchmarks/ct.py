"""Chest CT benchmark: end-to-end time per series through the service's CT pipeline
(series assembly -> MONAI preprocessing -> sliding-window inference through the
dynamic batcher -> lesions, label map, overlays, report saved), split into decode,
preprocess, inference and postprocess, with the process's peak RSS.

    python benchmarks/ct.py                  # 512 x 512 x 300 (0.7 x 0.7 x 1.0 mm)
    python benchmarks/ct.py --smoke          # 128 x 128 x 60; seconds, proves it works

The series is a synthetic phantom written as real DICOM files (int16, explicit VR
little endian) into a temporary folder and deleted afterwards. Each measurement runs
in its own process that holds what the service would hold: the instances' bytes as
an upload delivers them, the model repository loaded, the batcher and the CPU stage
started. Its peak RSS (VmHWM) is its own. Then (unless --no-http) the series is zipped
and POSTed to a real `aidx serve` process (only the CT model enabled), whose peak RSS
is read from /proc. Prints tables and saves JSON (benchmarks/results/ct.json).

    python benchmarks/ct.py --baseline main --no-http   # before (main) and after

With --baseline, the same measurement runs first on that revision's code
(benchmarks/baseline.py) and then on this checkout's, on the same series, and a
summary compares them (median of the runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from baseline import checkout, environment  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "512x512x300": ((300, 512, 512), (0.7, 0.7, 1.0)),
    "128x128x60": ((60, 128, 128), (2.8, 2.4, 5.0)),
}


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_phantom(directory: Path, size: str, seed: int) -> dict:  # type: ignore[type-arg]
    from aidx.pipelines.ct import synthetic

    shape, spacing = SIZES[size]
    t0 = time.perf_counter()
    phantom = synthetic.generate(np.random.default_rng(seed), shape, spacing, n_lesions=3)
    files = synthetic.write_series(phantom, directory)
    truth = [
        {"volume_ml": round(t.volume_ml, 2), "side": t.side, "centroid": t.centroid_lps_mm}
        for t in phantom.truth
    ]
    return {"files": len(files), "write_s": round(time.perf_counter() - t0, 1), "truth": truth}


# The pipeline's step functions, by stage (as its timings group them), looked up by name
# at call time: each is wrapped to add the process's CPU seconds while it runs.
CPU_STAGES = {
    "decode": [("pipeline", "decode")],
    "preprocess": [("pipeline", "preprocess"), ("pipeline", "find_lungs"), ("content", "screen")],
    "inference": [("pipeline", "probability_map")],
    "postprocess": [("pipeline", "build_report"), ("pipeline", "not_assessed_report")],
}


def meter_cpu() -> dict[str, float]:
    """Process CPU seconds per stage (time.process_time: every thread of the process,
    the batcher's and onnxruntime's included; one series at a time, so the process's
    CPU during a step is that step's). On a loaded machine these, not the wall-clock
    columns, show what a change saved. The series' HU file is written by a worker
    thread from the end of the decode on (slices.hu_written), beside the preprocess
    and the model: its CPU falls in those stages (mostly preprocess)."""
    import functools

    from aidx.pipelines.ct import content, pipeline

    modules = {"pipeline": pipeline, "content": content}
    spent = dict.fromkeys(CPU_STAGES, 0.0)

    def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            c0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.process_time() - c0

        return call

    for stage, names in CPU_STAGES.items():
        for module, name in names:
            if hasattr(modules[module], name):
                setattr(modules[module], name, timed(stage, getattr(modules[module], name)))
    return spent


async def _measure(directory: Path, runs: int, threads: int) -> dict:  # type: ignore[type-arg]
    from aidx.inference.cpu_stage import CpuStage
    from aidx.inference.reports import ReportStore
    from aidx.inference.serving import ModelService
    from aidx.inference.settings import Settings
    from aidx.pipelines.ct.pipeline import CtPipeline

    var = Path(tempfile.mkdtemp(prefix="aidx-ct-bench-var-"))
    settings = Settings(  # type: ignore[call-arg]
        mode="development",
        model_repository=ROOT / "models",
        var_dir=var,
        enabled_models=["ct_pneumonia"],
        cpu_threads_per_instance=threads,
    )
    service = ModelService(settings)
    await service.start()
    cpu = CpuStage(os.cpu_count() or 1)
    cpu.start()
    pipeline = CtPipeline(service, ReportStore(settings.reports_dir), cpu)
    rss_loaded = peak_rss_mb()
    cpu_s = meter_cpu()
    rows = []
    for run in range(runs):
        blobs = [p.read_bytes() for p in sorted(directory.glob("*.dcm"))]
        cpu_s.update(dict.fromkeys(cpu_s, 0.0))
        c0, t0 = time.process_time(), time.perf_counter()
        report = await pipeline.analyze(blobs)
        wall, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        del blobs
        t = report.timings
        rows.append(
            {
                "run": run,
                "total_s": round(wall, 2),
                "decode_s": round(t.decode_ms / 1e3, 2),
                "preprocess_s": round(t.preprocess_ms / 1e3, 2),
                "inference_s": round(report.inference_ms / 1e3, 2),
                "model_compute_s": round(t.compute_ms / 1e3, 2),
                "queue_s": round(t.queue_ms / 1e3, 2),
                "postprocess_s": round(t.postprocess_ms / 1e3, 2),
                "lesions": len(report.lesions),
                "lesion_ml": [x.volume_ml for x in report.lesions],
                "peak_rss_mb": round(peak_rss_mb(), 0),
                "total_cpu_s": round(total_cpu, 2),
                **{f"{stage}_cpu_s": round(spent, 2) for stage, spent in cpu_s.items()},
            }
        )
    await cpu.stop()
    await service.stop()
    return {"rss_after_load_mb": round(rss_loaded, 0), "runs": rows}


def child(directory: Path, runs: int, threads: int) -> None:
    print(json.dumps(asyncio.run(_measure(directory, runs, threads))))


def _vmhwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def http_run(directory: Path, runs: int) -> dict:  # type: ignore[type-arg]
    """The same series zipped and POSTed to a real `aidx serve` process; its own
    peak RSS (VmHWM) includes the upload, the unzipped instances and the pipeline."""
    import hashlib
    import io
    import socket
    import zipfile

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    key = "bench-ct-key-0123456789abcdefghijkl"  # the production key policy: >= 32
    keys = [{"name": "bench", "role": "radiologist",
             "key_sha256": hashlib.sha256(key.encode()).hexdigest()}]  # fmt: skip
    env = {
        **os.environ,
        "AIDX_MODE": "production",
        "AIDX_API_KEYS": json.dumps(keys),
        "AIDX_MODEL_REPOSITORY": str(ROOT / "models"),
        "AIDX_ENABLED_MODELS": json.dumps(["ct_pneumonia"]),
        "AIDX_VAR_DIR": tempfile.mkdtemp(prefix="aidx-ct-bench-srv-"),
        "AIDX_PORT": str(port),
        "AIDX_HOST": "127.0.0.1",
    }
    command = [sys.executable, "-m", "aidx.service", "serve", "--log-level", "warning"]
    server = subprocess.Popen(command, env=env)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(directory.glob("*.dcm")):
            archive.write(path, path.name)
    body = buffer.getvalue()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        loaded = _vmhwm_mb(server.pid)
        rows = []
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/zip"}
        for run in range(runs):
            t0 = time.perf_counter()
            response = httpx.post(f"{url}/v1/ct", content=body, headers=headers, timeout=600)
            response.raise_for_status()
            wall = time.perf_counter() - t0
            t = response.json()["timings"]
            rows.append({"run": run, "http_total_s": round(wall, 2),
                         "server_total_s": round(t["total_ms"] / 1e3, 2),
                         "peak_rss_mb": round(_vmhwm_mb(server.pid), 0)})  # fmt: skip
        return {"zip_mb": round(len(body) / 2**20, 1), "rss_after_load_mb": round(loaded, 0),
                "runs": rows}  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure_child(directory: Path, runs: int, threads: int, code: Path | None) -> dict:  # type: ignore[type-arg]
    command = [sys.executable, __file__, "--child", str(directory), "--runs", str(runs)]
    command += ["--threads", str(threads)]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, env=environment(code)
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="512x512x300")
    parser.add_argument("--smoke", action="store_true", help="the small series, one run")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ct.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-http", action="store_true", help="skip the aidx serve run")
    parser.add_argument("--baseline", metavar="REF", help="also measure this git revision")
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.runs, args.threads)
        return 0
    size = "128x128x60" if args.smoke else args.size
    runs = 1 if args.smoke else args.runs
    results: dict = {}  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="aidx-ct-bench-") as tmp:
        series_dir = Path(tmp) / "series"
        series = write_phantom(series_dir, size, args.seed)
        if args.baseline:
            code = checkout(args.baseline, Path(tmp) / "baseline")
            results["before"] = measure_child(series_dir, runs, args.threads, code)
        measured = measure_child(series_dir, runs, args.threads, None)
        if not args.no_http:
            measured["http"] = http_run(series_dir, runs)
    meta = {
        "size": size,
        "spacing_mm": SIZES[size][1],
        "series": series,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "onnxruntime_threads": args.threads,
        "python": platform.python_version(),
        "baseline": args.baseline,
    }
    if "before" in results:
        print(f"BEFORE ({args.baseline})")
        print_table(size, results["before"])
        print("\nAFTER (this checkout)")
    print_table(size, measured)
    if "before" in results:
        print_summary(results["before"], measured)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **results, **measured}, indent=2))
    print(f"\nsaved {args.out}")
    return 0


def print_summary(before: dict, after: dict) -> None:  # type: ignore[type-arg]
    """Median of the runs, before and after, and the speed-up."""

    def median(rows: list[dict], key: str) -> float:  # type: ignore[type-arg]
        return float(np.median([row[key] for row in rows]))

    print("\n| median | before | after | speed-up |\n|---|---|---|---|")
    keys = ["total_s", "decode_s", "preprocess_s", "inference_s", "postprocess_s"]
    keys += [key for key in CPU_KEYS if key in before["runs"][0]]  # an older baseline: none
    for key in keys:
        b, a = median(before["runs"], key), median(after["runs"], key)
        print(f"| {key} | {b:.2f} | {a:.2f} | {b / a if a else float('nan'):.1f}x |")
    pre_post = [median(r["runs"], "preprocess_s") + median(r["runs"], "postprocess_s")
                for r in (before, after)]  # fmt: skip
    print(f"| preprocess + postprocess | {pre_post[0]:.2f} | {pre_post[1]:.2f} | "
          f"{pre_post[0] / pre_post[1]:.1f}x |")  # fmt: skip
    b, a = median(before["runs"], "peak_rss_mb"), median(after["runs"], "peak_rss_mb")
    print(f"| peak_rss_mb | {b:.0f} | {a:.0f} | |")


CPU_KEYS = ["total_cpu_s", *(f"{stage}_cpu_s" for stage in CPU_STAGES)]


def print_table(size: str, measured: dict) -> None:  # type: ignore[type-arg]
    keys = ["total_s", "decode_s", "preprocess_s", "inference_s", "model_compute_s"]
    keys += ["queue_s", "postprocess_s", "lesions", "peak_rss_mb"]
    print(f"series {size}; RSS after model load {measured['rss_after_load_mb']} MB")
    print("| run | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for row in measured["runs"]:
        print(f"| {row['run']} | " + " | ".join(str(row[k]) for k in keys) + " |")
    print("\nprocess CPU seconds (all threads) per stage")
    print("| run | " + " | ".join(CPU_KEYS) + " |\n" + "|---" * (len(CPU_KEYS) + 1) + "|")
    for row in measured["runs"]:
        print(f"| {row['run']} | " + " | ".join(str(row.get(k, "-")) for k in CPU_KEYS) + " |")
    http = measured.get("http")
    if http:
        print(
            f"\nPOST /v1/ct to aidx serve (zip of {http['zip_mb']} MB); server RSS after "
            f"start {http['rss_after_load_mb']} MB"
        )
        print("| run | http_total_s | server_total_s | server peak_rss_mb |\n|---|---|---|---|")
        for row in http["runs"]:
            print(
                f"| {row['run']} | {row['http_total_s']} | {row['server_total_s']} | "
                f"{row['peak_rss_mb']} |"
            )


if __name__ == "__main__":
    raise SystemExit(main())
