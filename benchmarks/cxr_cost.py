"""Server CPU per `/v1/cxr` request, write-back included: `aidx serve` with the demo CXR
model and the folder sinks (no PACS or EMR configured), N posts of the 7 MB 15-bit CR
(pydicom-data RG1_UNCR.dcm, a new SOP Instance UID each, so each is a new report) one
after another (c=1), each followed by its outbox drained (the SR and the secondary
capture in the PACS folder, the FHIR bundle in the EMR folder).

    python benchmarks/cxr_cost.py                   # this checkout
    python benchmarks/cxr_cost.py --baseline main   # before (main) and after
    python benchmarks/cxr_cost.py --smoke           # a few requests

The figure is the server process's CPU (utime + stime of /proc/PID/stat, all its
threads): per request, from the post to its answer ("request": decode, preprocess,
model, postprocess, the build record) and from the answer to the outbox drained
("outbox": the build of the SR, SC and FHIR bundle, their delivery, the store's
bookkeeping). The server's idle CPU (its lanes' polls) is measured and reported, not
subtracted. Wall-clock ms are printed too, but on a shared machine the CPU is the
figure that counts. Saves JSON (benchmarks/results/cxr_cost.json).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import pydicom
from baseline import checkout  # benchmarks/ is the script's folder
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from serving import DEV_KEY, cell, environment, machine, service

ROOT = Path(__file__).resolve().parents[1]
FILE = "RG1_UNCR.dcm"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
SETTLE_S = 0.15  # the outbox is drained when its files are there and the CPU is still


def cpu_s(pid: int) -> float:
    """utime + stime of process `pid`, all threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def instances(n: int) -> list[bytes]:
    """RG1_UNCR with a new SOP Instance UID each (so each post is a new report)."""
    path = get_testdata_file(FILE)
    assert path is not None, f"{FILE} is missing (pip install pydicom-data)"
    ds = pydicom.dcmread(path)
    out = []
    for _ in range(n):
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def sink_files(var: Path) -> int:
    return sum(1 for _ in (var / "outbox").rglob("*.*") if not _.name.startswith("."))


def drained(pid: int, var: Path, expected: int, timeout_s: float = 60.0) -> float:
    """Wait for `expected` files in the sinks, then for the server's CPU to stay still
    for SETTLE_S; the CPU seconds then."""
    deadline = time.monotonic() + timeout_s
    while sink_files(var) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the outbox did not drain ({sink_files(var)}/{expected})")
        time.sleep(0.005)
    last = cpu_s(pid)
    while True:
        time.sleep(SETTLE_S)
        now = cpu_s(pid)
        if now == last:
            return now
        last = now


def run(requests: int, code: Path | None) -> dict:  # type: ignore[type-arg]
    """One server (this checkout's code, or the one at `code`), N+1 posts (the first
    warms up, unmeasured)."""
    bodies = instances(requests + 1)
    headers = {"X-API-Key": DEV_KEY, "Content-Type": "application/dicom"}
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        extra = {"AIDX_ENABLED_MODELS": '["cxr_pneumonia"]', "AIDX_VAR_DIR": str(var)}
        python_path = {"PYTHONPATH": str(code)} if code is not None else {}
        with environment(**python_path), service(extra) as served:
            pid = served.pid
            idle0, t_idle = cpu_s(pid), time.perf_counter()
            time.sleep(2.0)
            idle_ms_per_s = (cpu_s(pid) - idle0) * 1e3 / (time.perf_counter() - t_idle)
            rows: dict[str, list[float]] = {"request": [], "outbox": [], "wall_ms": []}
            with httpx.Client(base_url=f"http://{served.url}", timeout=120) as client:
                for i, body in enumerate(bodies):
                    c0, t0 = cpu_s(pid), time.perf_counter()
                    response = client.post("/v1/cxr", content=body, headers=headers)
                    response.raise_for_status()
                    wall_ms = (time.perf_counter() - t0) * 1e3
                    c1 = cpu_s(pid)
                    c2 = drained(pid, var, expected=3 * (i + 1))
                    if i == 0:
                        continue  # warm-up
                    rows["request"].append((c1 - c0) * 1e3)
                    rows["outbox"].append((c2 - c1) * 1e3)
                    rows["wall_ms"].append(wall_ms)
    return {"idle_cpu_ms_per_s": idle_ms_per_s, "requests": requests, "rows": rows}


def summary(result: dict) -> dict[str, float]:  # type: ignore[type-arg]
    rows = result["rows"]
    request, outbox = rows["request"], rows["outbox"]
    return {
        "request_cpu_ms": statistics.fmean(request),
        "outbox_cpu_ms": statistics.fmean(outbox),
        "total_cpu_ms": statistics.fmean(request) + statistics.fmean(outbox),
        "wall_p50_ms": statistics.median(rows["wall_ms"]),
        "idle_cpu_ms_per_s": result["idle_cpu_ms_per_s"],
    }


def print_table(results: dict[str, dict[str, float]]) -> None:
    print(
        f"{'code':<8} {'request':>8} {'outbox':>8} {'total':>8} {'wall p50':>9} {'idle/s':>7}"
        "   (server CPU ms per /v1/cxr; wall ms; idle CPU ms per s)"
    )
    for label, s in results.items():
        print(
            f"{label:<8} {cell(s['request_cpu_ms'])} {cell(s['outbox_cpu_ms'])} "
            f"{cell(s['total_cpu_ms'])} {cell(s['wall_p50_ms'], 9)} "
            f"{cell(s['idle_cpu_ms_per_s'], 7)}"
        )
    if "before" in results and "after" in results:
        ratio = results["after"]["total_cpu_ms"] / results["before"]["total_cpu_ms"]
        print(f"after / before, total server CPU per request: {ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="3 requests")
    parser.add_argument("--baseline", metavar="REF", help="also measure this git revision")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cxr_cost.json")
    args = parser.parse_args()
    requests = 3 if args.smoke else args.requests
    raw: dict[str, dict] = {}  # type: ignore[type-arg]
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            raw["before"] = run(requests, checkout(args.baseline, Path(tmp)))
    raw["after" if args.baseline else "this"] = run(requests, None)
    results = {label: summary(r) for label, r in raw.items()}
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "file": FILE,
                "baseline": args.baseline,
                "summary": results,
                "raw": raw,
                "machine": machine(load_average=" ".join(f"{v:.2f}" for v in os.getloadavg())),
            },
            indent=2,
        )
    )
    print(f"saved {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
