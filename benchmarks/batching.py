"""Batching benchmark: raw onnxruntime vs the service's /v2 (tritonclient, binary
tensors) vs /v1/cxr (DICOM end to end), at several concurrencies.

    python benchmarks/batching.py                    # starts its own service
    python benchmarks/batching.py --url 127.0.0.1:8000 --key KEY
    python benchmarks/batching.py --smoke            # seconds; proves it still works
    # a production-sized model: torchxrayvision's DenseNet-121 (untrained weights)
    aidx models export-xrv --repository /tmp/xrv && \
      AIDX_MODEL_REPOSITORY=/tmp/xrv python benchmarks/batching.py --model xrv_densenet

Prints one table and saves JSON (benchmarks/results/batching.json by default).
Closed loop: each of C clients sends its next request when the last one returns.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pydicom
import tritonclient.http.aio as triton_aio
from pydicom.data import get_testdata_file
from serving import DEV_KEY, REPOSITORY, ROOT, cell, machine, service  # benchmarks/serving.py
from tritonclient.http import InferInput, InferRequestedOutput

from aidx.gpu.providers import CPU, placements
from aidx.inference.repository import load_entry
from aidx.inference.runtime import session_options, threads_per_instance


@dataclass
class Row:
    path: str
    concurrency: int
    requests: int
    throughput_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    extra: dict[str, float]


def percentiles(latencies_s: list[float]) -> tuple[float, float, float]:
    p = np.percentile(np.asarray(latencies_s) * 1e3, [50, 95, 99])
    return float(p[0]), float(p[1]), float(p[2])


def sample_input(shape: list[int], batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1024, 1024, (batch, *shape)).astype(np.float32)


def raw_onnxruntime(
    model_path: Path, batch_sizes: list[int], seconds: float, sessions: int = 1, rounds: int = 3
) -> list[Row]:
    """The ceiling: no server, fixed batch sizes; `sessions` copies run side by side
    (each in its own thread, the cores split between them as the service splits them
    for a model's instance_group), so the service is compared with the same layout.
    Each batch size runs `rounds` times, interleaved, and its median round is kept:
    on shared cores one lucky or unlucky round would move the bar by 10%."""
    # the service's own session options, so the gap measured is the serving overhead
    options = session_options(threads_per_instance(0, sessions))
    copies = [
        ort.InferenceSession(str(model_path), sess_options=options, providers=[CPU])
        for _ in range(sessions)
    ]
    path = "raw onnxruntime" + (f" x{sessions} sessions" if sessions > 1 else "")
    measured: dict[int, list[Row]] = {batch: [] for batch in batch_sizes}
    for _ in range(rounds):
        for batch in batch_sizes:
            row = _raw_round(copies, batch, seconds / rounds)
            measured[batch].append(Row(path, sessions, *row))
    medians = []
    for rows in measured.values():
        rows.sort(key=lambda r: r.throughput_rps)
        medians.append(rows[len(rows) // 2])
    return medians


def _raw_round(
    copies: list[ort.InferenceSession], batch: int, seconds: float
) -> tuple[int, float, float, float, float, float, dict[str, float]]:
    names = [o.name for o in copies[0].get_outputs()]
    (spec,) = copies[0].get_inputs()
    feed = {spec.name: sample_input(list(spec.shape[1:]), batch)}
    for session in copies:
        session.run(names, feed)  # warm
    latencies: list[float] = []
    start, cpu0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(len(copies)) as pool:
        runs = [
            pool.submit(_timed_runs, session, names, feed, start + seconds, latencies)
            for session in copies
        ]
        for run in runs:
            run.result()
    elapsed = time.perf_counter() - start
    items = len(latencies) * batch
    p50, p95, p99 = percentiles(latencies)
    cpu = {"cpu_ms_per_item": (time.process_time() - cpu0) / items * 1e3}
    return items, items / elapsed, p50, p95, p99, float(batch), cpu


def _timed_runs(
    session: ort.InferenceSession,
    names: list[str],
    feed: dict[str, np.ndarray],
    stop_at: float,
    latencies: list[float],
) -> None:
    while time.perf_counter() < stop_at or len(latencies) < 3:
        t0 = time.perf_counter()
        session.run(names, feed)
        latencies.append(time.perf_counter() - t0)


def cpu_copies(model: str) -> int:
    """How many copies the service makes of `model` on a CPU (its instance_group)."""
    return len(placements(load_entry(REPOSITORY / model).config, "cpu"))


@dataclass(frozen=True)
class ServerCounters:
    """Read from the service's /metrics: batch-size histogram and process CPU time."""

    batch_sum: float
    batch_count: float
    compute_s: float  # the model's execution time, all batches together
    cpu_s: float

    def mean_batch_since(self, before: ServerCounters) -> float:
        return (self.batch_sum - before.batch_sum) / max(self.batch_count - before.batch_count, 1)

    def compute_ms_per_batch_since(self, before: ServerCounters) -> float:
        batches = max(self.batch_count - before.batch_count, 1)
        return (self.compute_s - before.compute_s) / batches * 1e3


def server_counters(url: str, model: str) -> ServerCounters:
    series = {
        f'aidx_batch_size_sum{{model="{model}"}}': "sum",
        f'aidx_batch_size_count{{model="{model}"}}': "count",
        f'aidx_compute_seconds_sum{{model="{model}"}}': "compute",
        "process_cpu_seconds_total": "cpu",
    }
    values = dict.fromkeys(series.values(), 0.0)
    for line in httpx.get(f"http://{url}/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in series:
            values[series[name]] = float(value)
    return ServerCounters(values["sum"], values["count"], values["compute"], values["cpu"])


def cpu_per_request_ms(
    before: ServerCounters, after: ServerCounters, client_cpu_s: float, requests: int
) -> dict[str, float]:
    """Where the cores went: the server process and this (client) process, per request."""
    n = max(requests, 1)
    return {
        "server_cpu_ms_per_req": (after.cpu_s - before.cpu_s) / n * 1e3,
        "client_cpu_ms_per_req": client_cpu_s / n * 1e3,
    }


async def closed_loop(
    concurrency: int, seconds: float, send: Callable[[], Awaitable[dict[str, float]]]
) -> tuple[list[float], float, dict[str, float]]:
    """Latencies, elapsed seconds, and the means of what `send` reports, plus this
    process's CPU time per request (`client_cpu_s`, in total)."""
    latencies: list[float] = []
    extras: dict[str, list[float]] = {}
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            extra = await send()
            latencies.append(time.perf_counter() - t0)
            for key, value in extra.items():
                extras.setdefault(key, []).append(value)

    start, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    means = {k: float(np.mean(v)) for k, v in extras.items()}
    means["client_cpu_s"] = time.process_time() - cpu0
    return latencies, time.perf_counter() - start, means


async def sweep_v2(url: str, key: str, model: str, concurrency: int, seconds: float) -> Row:
    """KServe v2 through tritonclient, shapes and names read from the model's metadata."""
    client = triton_aio.InferenceServerClient(url=url, conn_limit=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    meta = await client.get_model_metadata(model, headers=headers)
    (spec,) = meta["inputs"]
    x = sample_input(spec["shape"][1:], 1, seed=1)
    tensor = InferInput(spec["name"], list(x.shape), spec["datatype"])
    tensor.set_data_from_numpy(x, binary_data=True)
    names = [o["name"] for o in meta["outputs"]]
    outputs = [InferRequestedOutput(n, binary_data=True) for n in names]

    async def send() -> dict[str, float]:
        result = await client.infer(model, [tensor], outputs=outputs, headers=headers)
        result.as_numpy(names[0])
        return {}

    await send()
    before = server_counters(url, model)
    latencies, elapsed, extras = await closed_loop(concurrency, seconds, send)
    after = server_counters(url, model)
    await client.close()
    p50, p95, p99 = percentiles(latencies)
    return Row(
        "/v2 infer (tritonclient, binary)",
        concurrency,
        len(latencies),
        len(latencies) / elapsed,
        p50,
        p95,
        p99,
        after.mean_batch_since(before),
        {
            **cpu_per_request_ms(before, after, extras.pop("client_cpu_s"), len(latencies)),
            "compute_ms_per_batch": after.compute_ms_per_batch_since(before),
        },
    )


_INSTANCES = itertools.count(1)


async def outbox_pending(client: httpx.AsyncClient, key: str) -> int:
    answer = await client.get("/v1/outbox", headers={"Authorization": f"Bearer {key}"})
    answer.raise_for_status()
    return sum(int(d.get("pending", 0)) for d in answer.json()["destinations"].values())


async def outbox_drained(client: httpx.AsyncClient, key: str, timeout_s: float = 600) -> None:
    deadline = time.perf_counter() + timeout_s
    while await outbox_pending(client, key) and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)


def new_instance(dicom: bytes, uid: str) -> bytes:
    """The same image as a new instance: its SOP Instance UID (file meta and dataset)
    replaced by another of the same length. A resent instance is the same report, whose
    write-back is not built again; a hospital sends new ones, so the benchmark does."""
    stem, _, last = uid.rpartition(".")
    width = len(last)
    number = 10 ** (width - 1) + next(_INSTANCES) % (9 * 10 ** (width - 1))
    return dicom.replace(uid.encode(), f"{stem}.{number}".encode())


async def sweep_v1(
    url: str, key: str, model: str, dicom: bytes, concurrency: int, seconds: float
) -> Row:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/dicom"}
    limits = httpx.Limits(max_connections=concurrency)
    uid = str(pydicom.dcmread(io.BytesIO(dicom), stop_before_pixels=True).SOPInstanceUID)
    async with httpx.AsyncClient(base_url=f"http://{url}", limits=limits, timeout=120) as client:

        async def send() -> dict[str, float]:
            body = new_instance(dicom, uid)
            response = await client.post("/v1/cxr", content=body, headers=headers)
            response.raise_for_status()
            timings = response.json()["timings"]
            return {
                k: timings[k]
                for k in (
                    "decode_ms",
                    "preprocess_ms",
                    "cpu_wait_ms",
                    "queue_ms",
                    "compute_ms",
                    "postprocess_ms",
                    "writeback_ms",
                )
            }

        await send()
        await outbox_drained(client, key)
        before = server_counters(url, model)
        latencies, elapsed, extras = await closed_loop(concurrency, seconds, send)
        # The write-back builds after the answers: count its CPU, and its backlog.
        extras["outbox_backlog"] = float(await outbox_pending(client, key))
        await outbox_drained(client, key)
        after = server_counters(url, model)
    extras |= cpu_per_request_ms(before, after, extras.pop("client_cpu_s"), len(latencies))
    p50, p95, p99 = percentiles(latencies)
    return Row(
        "/v1/cxr (DICOM end to end)",
        concurrency,
        len(latencies),
        len(latencies) / elapsed,
        p50,
        p95,
        p99,
        after.mean_batch_since(before),
        extras,
    )


def max_queue_delay_us(model: str) -> int:
    text = (REPOSITORY / model / "config.pbtxt").read_text()
    match = re.search(r"max_queue_delay_microseconds:\s*(\d+)", text)
    return int(match.group(1)) if match else 0


def print_table(rows: list[Row]) -> None:
    """CPU columns: core-milliseconds per request (raw: per item) in the server and in
    the load generator, which share this machine's cores."""
    print(
        f"\n{'path':34} {'conc':>5} {'reqs':>6} {'items/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'batch':>6} {'srv cpu':>8} {'cli cpu':>8}"
    )
    for r in rows:
        server = "cpu_ms_per_item" if r.path == "raw onnxruntime" else "server_cpu_ms_per_req"
        print(
            f"{r.path:34} {r.concurrency:>5} {r.requests:>6} {r.throughput_rps:>8.1f} "
            f"{r.p50_ms:>8.1f} {r.p95_ms:>8.1f} {r.p99_ms:>8.1f} {r.mean_batch:>6.1f} "
            f"{cell(r.extra.get(server))} {cell(r.extra.get('client_cpu_ms_per_req'))}"
        )


def verdict(
    model: str, raw: list[Row], v2: list[Row], v1: list[Row], concurrency: int
) -> dict[str, object]:
    """The issue's bars at `concurrency`: /v2 throughput against the best raw row (one
    session, or the config's copies side by side, whichever is faster), and p99 against
    2 x (max queue delay + the service's own mean batch compute time in that sweep)."""
    best = max(raw, key=lambda r: r.throughput_rps)
    at = next((r for r in v2 if r.concurrency == concurrency), v2[-1])
    compute_ms = at.extra.get("compute_ms_per_batch")
    if compute_ms is None:  # an older service: the raw session's time at that batch size
        compute_ms = min(raw, key=lambda r: abs(r.mean_batch - at.mean_batch)).p50_ms
    p99_bar = 2 * (max_queue_delay_us(model) / 1e3 + compute_ms)
    summary: dict[str, object] = {
        "raw_best": best.path,
        "raw_best_batch": best.mean_batch,
        "raw_best_items_per_s": round(best.throughput_rps, 1),
        "v2_concurrency": at.concurrency,
        "v2_items_per_s": round(at.throughput_rps, 1),
        "v2_fraction_of_raw": round(at.throughput_rps / best.throughput_rps, 3),
        "v2_p99_ms": round(at.p99_ms, 1),
        "p99_bar_ms": round(p99_bar, 1),
        "throughput_bar_met": at.throughput_rps >= 0.9 * best.throughput_rps,
        "p99_bar_met": at.p99_ms <= p99_bar,
    }
    summary |= cpu_budget(best, at)
    summary |= v1_beyond_v2(v1, v2)
    return summary


def v1_beyond_v2(v1: list[Row], v2: list[Row]) -> dict[str, object]:
    """What /v1/cxr costs beyond /v2, one request at a time (no queueing for cores):
    its latency beyond /v2's against the steps the report times, and its server CPU."""
    lone_v1 = next((r for r in v1 if r.concurrency == 1), None)
    lone_v2 = next((r for r in v2 if r.concurrency == 1), None)
    if lone_v1 is None or lone_v2 is None:
        return {}
    steps = ("decode_ms", "preprocess_ms", "cpu_wait_ms", "postprocess_ms", "writeback_ms")
    cpu = "server_cpu_ms_per_req"
    return {
        "v1_c1_minus_v2_c1_p50_ms": round(lone_v1.p50_ms - lone_v2.p50_ms, 1),
        **{f"v1_c1_{k}": round(lone_v1.extra.get(k, 0.0), 1) for k in steps},
        "v1_c1_timed_steps_ms": round(sum(lone_v1.extra.get(k, 0.0) for k in steps), 1),
        "v1_minus_v2_server_cpu_ms_per_req": round(
            lone_v1.extra.get(cpu, 0.0) - lone_v2.extra.get(cpu, 0.0), 1
        ),
    }


def cpu_budget(best: Row, v2: Row) -> dict[str, object]:
    """Explain the /v2 gap in core-milliseconds: the model's own cost per item (raw, at
    its best batch), the server's cost beyond it, and the load generator's, which runs
    on the same cores here. `ceiling` is the throughput those costs allow."""
    model = best.extra.get("cpu_ms_per_item")
    server = v2.extra.get("server_cpu_ms_per_req")
    client = v2.extra.get("client_cpu_ms_per_req")
    if model is None or server is None or client is None:
        return {}
    cores = os.cpu_count() or 1
    return {
        "model_cpu_ms_per_item": round(model, 3),
        "v2_server_cpu_ms_per_req": round(server, 3),
        "v2_server_overhead_cpu_ms_per_req": round(server - model, 3),
        "v2_client_cpu_ms_per_req": round(client, 3),
        "v2_ceiling_items_per_s_on_these_cores": round(cores / (server + client) * 1e3, 1),
    }


async def sweep_batcher(model: str, concurrency: int, seconds: float) -> Row:
    """The batcher alone, in-process (no HTTP): isolates batching from transport cost."""
    from aidx.inference.serving import ModelService
    from aidx.inference.settings import Settings

    settings = Settings(mode="development", model_repository=REPOSITORY, enabled_models=[model],
                        var_dir=Path(tempfile.mkdtemp()))  # fmt: skip
    service = ModelService(settings)
    await service.start()
    served = service.get_ready(model)
    (spec,) = served.entry.config.input
    x = sample_input(list(spec.dims), 1, seed=2)
    sizes: list[int] = []

    async def send() -> dict[str, float]:
        result = await service.infer(model, {spec.name: x})
        sizes.append(result.batch_size)
        return {}

    await send()
    latencies, elapsed, extras = await closed_loop(concurrency, seconds, send)
    await service.stop()
    p50, p95, p99 = percentiles(latencies)
    # one process: the model, the batcher and the callers together
    cpu = {"server_cpu_ms_per_req": extras["client_cpu_s"] / len(latencies) * 1e3}
    return Row("batcher in-process (no HTTP)", concurrency, len(latencies),
               len(latencies) / elapsed, p50, p95, p99, float(np.mean(sizes)), cpu)  # fmt: skip


async def run_sweeps(url: str, key: str, args: argparse.Namespace) -> tuple[list[Row], list[Row]]:
    dicom = Path(get_testdata_file("RG1_UNCR.dcm")).read_bytes()
    v2 = [await sweep_v2(url, key, args.model, c, args.seconds) for c in args.concurrency]
    v1 = [await sweep_v1(url, key, args.model, dicom, c, args.seconds) for c in args.v1_concurrency]
    return v2, v1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", help="a running service (host:port); default: start one")
    parser.add_argument("--key", default=DEV_KEY)
    parser.add_argument("--model", default="cxr_pneumonia", help="a CXR-pipeline model")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 32, 64]
    )
    parser.add_argument(
        "--v1-concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 4, 16, 32, 64],
    )
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/batching-MODEL.json")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to prove it runs")
    args = parser.parse_args()
    args.out = args.out or ROOT / "benchmarks" / "results" / f"batching-{args.model}.json"
    if args.smoke:
        args.seconds, args.concurrency, args.v1_concurrency = 0.5, [1, 4], [1, 2]
    model_path = REPOSITORY / args.model / "1" / "model.onnx"
    batches = [1, 8, 32] if args.smoke else [1, 4, 8, 16, 32]
    raw = raw_onnxruntime(model_path, batches, args.seconds)
    copies = cpu_copies(args.model)
    if copies > 1:
        raw += raw_onnxruntime(model_path, batches, args.seconds, sessions=copies)
    if args.url:
        v2, v1 = asyncio.run(run_sweeps(args.url, args.key, args))
    else:
        with service() as served:
            v2, v1 = asyncio.run(run_sweeps(served.url, args.key, args))
    inproc = [asyncio.run(sweep_batcher(args.model, c, args.seconds)) for c in args.concurrency]
    rows = raw + inproc + v2 + v1
    print_table(rows)
    summary = verdict(args.model, raw, v2, v1, 32)
    print("\n" + "\n".join(f"{k}: {v}" for k, v in summary.items()))
    for r in v1:
        print(
            f"/v1/cxr c={r.concurrency} mean ms: "
            + ", ".join(f"{k}={v:.1f}" for k, v in r.extra.items())
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": args.model,
                "machine": machine(),
                "seconds_per_point": args.seconds,
                "rows": [asdict(r) for r in rows],
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
