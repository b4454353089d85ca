"""Lab screening benchmark:

1. batch mode: results screened per second (vectorised normalisation, every rule,
   the anomaly model through the dynamic batcher), 20-analyte panels with history;
2. latency of one 20-analyte panel over HTTP (POST /v1/labs/screen, JSON) and over
   MLLP (ORU^R01 -> ACK), at low load (one client, one request at a time), against a
   real `aidx serve` process that it starts.

    python benchmarks/labs.py             # full run
    python benchmarks/labs.py --smoke     # seconds; proves it still works

Prints one table and saves JSON (benchmarks/results/labs.json by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from aidx.inference.serving import ModelService
from aidx.inference.settings import Settings, hash_key
from aidx.pipelines.labs.anomaly_client import AnomalyClient
from aidx.pipelines.labs.batch import BatchScreener, ResultTable
from aidx.pipelines.labs.catalogue import load_catalogue
from aidx.pipelines.labs.synthetic import complete_panels, load_nhanes

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = Path(os.environ.get("AIDX_MODEL_REPOSITORY", ROOT / "models"))
KEY = "benchmark-lab-key-0123456789abcdef"
PANEL = [  # (key, LOINC, unit as sent, canonical -> sent factor)
    ("sodium", "2951-2", "mmol/L", 1.0),
    ("potassium", "2823-3", "mmol/L", 1.0),
    ("chloride", "2075-0", "mmol/L", 1.0),
    ("bicarbonate", "2028-9", "mmol/L", 1.0),
    ("urea_nitrogen", "3094-0", "mg/dL", 1.0),
    ("creatinine", "2160-0", "mg/dL", 1 / 88.42),
    ("glucose", "2345-7", "mg/dL", 1 / 0.0555),
    ("calcium", "17861-6", "mg/dL", 1 / 0.2495),
    ("magnesium", "19123-9", "mg/dL", 1 / 0.4114),
    ("phosphate", "2777-1", "mg/dL", 1 / 0.3229),
    ("albumin", "1751-7", "g/dL", 0.1),
    ("protein_total", "2885-2", "g/dL", 0.1),
    ("alt", "1742-6", "U/L", 1.0),
    ("ast", "1920-8", "U/L", 1.0),
    ("alp", "6768-6", "U/L", 1.0),
    ("hemoglobin", "718-7", "g/dL", 1.0),
    ("hematocrit", "4544-3", "%", 1.0),
    ("mcv", "787-2", "fL", 1.0),
    ("mch", "785-6", "pg", 1.0),
    ("rdw", "788-0", "%", 1.0),
]


@dataclass
class Row:
    path: str
    what: str
    count: int
    throughput_per_s: float
    p50_ms: float
    p99_ms: float


def panels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, 20] canonical values from NHANES people + synthetic analytes, sex, age."""
    people = load_nhanes()
    idx = np.random.default_rng(seed).integers(0, len(people.age_y), n)
    keys = [k for k, *_ in PANEL]
    values = complete_panels(people, keys, seed=seed)[idx]
    return values, people.sex_male[idx].astype(int), people.age_y[idx]


async def batch_mode(specimens: int, repeats: int) -> Row:
    settings = Settings(
        mode="development",
        dev_api_key=KEY,
        model_repository=REPOSITORY,
        enabled_models=["labs_anomaly"],
        var_dir=Path(tempfile.mkdtemp()),
    )
    models = ModelService(settings)
    await models.start()
    catalogue = load_catalogue()
    screener = BatchScreener(catalogue, AnomalyClient(models, catalogue))
    values, sex, age = panels(specimens)
    k = len(PANEL)
    factors = np.array([f for *_, f in PANEL])
    table = ResultTable(
        specimen=np.repeat(np.arange(specimens), k),
        code=np.tile(np.array([c for _, c, _, _ in PANEL]), specimens),
        value=(values * factors).ravel(),
        unit=np.tile(np.array([u for _, _, u, _ in PANEL]), specimens),
        prev_value=(values * np.random.default_rng(1).normal(1, 0.03, values.shape)).ravel(),
        prev_age_h=np.full(specimens * k, 24.0),
        sex=sex,
        age_y=age,
    )
    await screener.screen(table)  # warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = await screener.screen(table)
        times.append(time.perf_counter() - t0)
    await models.stop()
    assert (out.status == 0).all(), "every benchmark result should be screenable"
    results = specimens * k
    best = min(times)
    return Row(
        "batch (in-process)", f"{specimens} panels x {k}", results, results / best, *_ms(times)
    )


def _ms(times: list[float]) -> tuple[float, float]:
    p = np.percentile(np.asarray(times) * 1e3, [50, 99])
    return float(p[0]), float(p[1])


def _json_panel(i: int, values: np.ndarray, sex: int, age: float) -> dict[str, object]:
    t = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=i)
    return {
        "specimens": [
            {
                "specimen_id": f"BENCH-{i}",
                "patient_id": f"BP-{i % 50}",
                "sex": "M" if sex else "F",
                "age_y": float(age),
                "collected_at": t.isoformat(),
                "results": [
                    {"code": c, "value": round(float(v * f), 4), "unit": u}
                    for (_, c, u, f), v in zip(PANEL, values, strict=True)
                ],
            }
        ]
    }


def _oru(i: int, values: np.ndarray, sex: int) -> bytes:
    t = (datetime(2026, 6, 1, tzinfo=UTC) + timedelta(hours=i)).strftime("%Y%m%d%H%M")
    lines = [
        f"MSH|^~\\&|LIS|LAB|AIDX|HOSP|{t}||ORU^R01^ORU_R01|BM{i}|P|2.5.1",
        f"PID|1||BM-{i % 50}^^^HOSP^MR||DOE^J||19700101|{'M' if sex else 'F'}",
        f"OBR|1|P{i}|BMS-{i}|24323-8^CMP^LN|||{t}",
    ]
    for j, ((_, c, u, f), v) in enumerate(zip(PANEL, values, strict=True), start=1):
        lines.append(f"OBX|{j}|NM|{c}^^LN||{round(float(v * f), 4)}|{u}^^UCUM|||||F")
    return ("\r".join(lines) + "\r").encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve() -> tuple[subprocess.Popen[bytes], int, int]:
    http_port, mllp_port = _free_port(), _free_port()
    keys = [{"name": "bench", "role": "lab", "key_sha256": hash_key(KEY)}]
    env = {
        **os.environ,
        "AIDX_MODE": "production",
        "AIDX_API_KEYS": json.dumps(keys),
        "AIDX_MODEL_REPOSITORY": str(REPOSITORY),
        "AIDX_ENABLED_MODELS": json.dumps(["labs_anomaly"]),
        "AIDX_VAR_DIR": tempfile.mkdtemp(prefix="aidx-bench-"),
        "AIDX_PORT": str(http_port),
        "AIDX_LABS_MLLP_PORT": str(mllp_port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "aidx.service", "serve", "--log-level", "warning"], env=env
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1).status_code == 200:
                return process, http_port, mllp_port
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise TimeoutError("aidx serve did not become ready")


def http_latency(port: int, requests: int, warmup: int) -> Row:
    values, sex, age = panels(requests + warmup, seed=2)
    times = []
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        for i in range(requests + warmup):
            body = _json_panel(i, values[i], int(sex[i]), float(age[i]))
            t0 = time.perf_counter()
            response = client.post("/v1/labs/screen", json=body)
            elapsed = time.perf_counter() - t0
            assert response.status_code == 200, response.text
            if i >= warmup:
                times.append(elapsed)
    return Row("HTTP POST /v1/labs/screen", "one 20-analyte panel", requests,
               len(times) / sum(times), *_ms(times))  # fmt: skip


def mllp_latency(port: int, requests: int, warmup: int) -> Row:
    values, sex, _ = panels(requests + warmup, seed=3)
    times = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for i in range(requests + warmup):
            data = b"\x0b" + _oru(i, values[i], int(sex[i])) + b"\x1c\r"
            t0 = time.perf_counter()
            sock.sendall(data)
            answer = b""
            while not answer.endswith(b"\x1c\r"):
                answer += sock.recv(65536)
            elapsed = time.perf_counter() - t0
            assert b"MSA|AA|" in answer, answer
            if i >= warmup:
                times.append(elapsed)
    return Row("MLLP ORU^R01 -> ACK", "one 20-analyte panel", requests,
               len(times) / sum(times), *_ms(times))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/labs.json")
    args = parser.parse_args()
    specimens, repeats, requests, warmup = (200, 2, 20, 5) if args.smoke else (10_000, 5, 500, 50)
    rows = [asyncio.run(batch_mode(specimens, repeats))]
    process, http_port, mllp_port = serve()
    try:
        rows.append(http_latency(http_port, requests, warmup))
        rows.append(mllp_latency(mllp_port, requests, warmup))
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"{'path':28} {'what':24} {'n':>7} {'per s':>11} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r.path:28} {r.what:24} {r.count:>7} {r.throughput_per_s:>11,.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
        )
    if args.out or not args.smoke:  # a smoke run keeps the real results unless told
        args.out = args.out or ROOT / "benchmarks" / "results" / "labs.json"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
