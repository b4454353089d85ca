"""Shadow benchmark: the serving path's throughput and latency with and without a
candidate version in shadow (inference/shadow.py), in-process through the batcher and
end to end through /v1/cxr (DICOM in, report out, write-back on).

    python benchmarks/shadow.py                    # cxr_pneumonia v1 serving, v2 shadow
    python benchmarks/shadow.py --smoke            # seconds; proves it still works

Closed loop, as benchmarks/batching.py: each of C clients sends its next request when
the last one returns. Each point runs without and with the shadow in turn, `rounds`
times, and keeps the median round. With the shadow, the table also gives what the
shadow did meanwhile: batches compared, batches dropped (its queue full), and its
compute per batch. Prints one table and saves JSON (benchmarks/results/shadow.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batching import (  # noqa: E402 - the sibling benchmark's helpers
    Row,
    closed_loop,
    percentiles,
    sample_input,
    sweep_v1,
)
from serving import DEV_KEY, REPOSITORY, ROOT, service  # noqa: E402

from aidx.inference.serving import ModelService  # noqa: E402
from aidx.inference.settings import Settings  # noqa: E402


async def sweep_inprocess(model: str, shadow: int | None, concurrency: int, seconds: float) -> Row:
    """The batcher alone, with the shadow (if any) on the same process's cores."""
    settings = Settings(
        mode="development", model_repository=REPOSITORY, enabled_models=[model],
        var_dir=Path(tempfile.mkdtemp()), shadow={"versions": {model: shadow or 0}},
    )  # fmt: skip
    models = ModelService(settings)
    await models.start()
    served = models.get_ready(model)
    (spec,) = served.entry.config.input
    x = sample_input(list(spec.dims), 1, seed=2)
    sizes: list[int] = []

    async def send() -> dict[str, float]:
        result = await models.infer(model, {spec.name: x})
        sizes.append(result.batch_size)
        return {}

    await send()
    runner = served.shadow
    if runner is not None:
        await asyncio.to_thread(runner.drain)
        before = (runner.summary.batches, runner.dropped, runner.summary.shadow_s)
    latencies, elapsed, extras = await closed_loop(concurrency, seconds, send)
    extra = {"server_cpu_ms_per_req": extras["client_cpu_s"] / len(latencies) * 1e3}
    if runner is not None:
        t0 = time.perf_counter()
        await asyncio.to_thread(runner.drain)
        compared = runner.summary.batches - before[0]
        extra |= {
            "shadow_batches": float(compared),
            "shadow_dropped": float(runner.dropped - before[1]),
            "shadow_ms_per_batch": (runner.summary.shadow_s - before[2]) / max(compared, 1) * 1e3,
            "shadow_drain_s": time.perf_counter() - t0,
        }
    await models.stop()
    p50, p95, p99 = percentiles(latencies)
    path = f"batcher in-process, {'shadow v' + str(shadow) if shadow else 'no shadow'}"
    return Row(path, concurrency, len(latencies), len(latencies) / elapsed,
               p50, p95, p99, float(np.mean(sizes)), extra)  # fmt: skip


def median_round(rows: list[Row]) -> Row:
    return sorted(rows, key=lambda r: r.throughput_rps)[len(rows) // 2]


def inprocess_rows(args: argparse.Namespace) -> list[Row]:
    rows = []
    for c in args.concurrency:
        rounds: dict[int | None, list[Row]] = {None: [], args.shadow: []}
        for _ in range(args.rounds):  # interleaved: the machine's mood hits both alike
            for shadow in rounds:
                rounds[shadow].append(
                    asyncio.run(sweep_inprocess(args.model, shadow, c, args.seconds))
                )
        rows += [median_round(r) for r in rounds.values()]
    return rows


def shadow_counters(url: str) -> dict[str, float]:
    """From the service's /metrics: batches the shadow ran, dropped, its compute."""
    found = {"shadow_batches": 0.0, "shadow_dropped": 0.0, "shadow_s": 0.0}
    for line in httpx.get(f"http://{url}/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("aidx_shadow_latency_seconds_count") and 'role="shadow"' in name:
            found["shadow_batches"] += float(value)
        elif name.startswith("aidx_shadow_latency_seconds_sum") and 'role="shadow"' in name:
            found["shadow_s"] += float(value)
        elif name.startswith("aidx_shadow_dropped_total"):
            found["shadow_dropped"] += float(value)
    return found


def end_to_end_rows(args: argparse.Namespace) -> list[Row]:
    dicom = Path(get_testdata_file("RG1_UNCR.dcm")).read_bytes()
    rows = []
    for shadow in (None, args.shadow):
        env = {"AIDX_SHADOW_VERSIONS": json.dumps({args.model: shadow or 0})}
        with service(env) as served:
            url = served.url
            for c in args.v1_concurrency:
                before = shadow_counters(url)
                row = asyncio.run(sweep_v1(url, DEV_KEY, args.model, dicom, c, args.seconds))
                row.path = f"/v1/cxr, {'shadow v' + str(shadow) if shadow else 'no shadow'}"
                if shadow:  # counted until the outbox drained, so the shadow had caught up
                    after = shadow_counters(url)
                    d = {k: after[k] - before[k] for k in after}
                    row.extra |= {
                        "shadow_batches": d["shadow_batches"],
                        "shadow_dropped": d["shadow_dropped"],
                        "shadow_ms_per_batch": d["shadow_s"] / max(d["shadow_batches"], 1) * 1e3,
                    }
                rows.append(row)
    return rows


def print_table(rows: list[Row]) -> None:
    print(
        f"\n{'path':32} {'conc':>5} {'reqs':>6} {'items/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'batch':>6} {'shadow b':>8} {'dropped':>8} {'sh ms/b':>8}"
    )
    for r in rows:
        e = r.extra
        cells = [e.get(k) for k in ("shadow_batches", "shadow_dropped", "shadow_ms_per_batch")]
        shadow = " ".join(f"{v:>8.0f}" if v is not None else f"{'':>8}" for v in cells[:2])
        shadow += f" {cells[2]:>8.2f}" if cells[2] is not None else f" {'':>8}"
        print(
            f"{r.path:32} {r.concurrency:>5} {r.requests:>6} {r.throughput_rps:>8.1f} "
            f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.mean_batch:>6.1f} {shadow}"
        )


def overhead(rows: list[Row]) -> dict[str, float]:
    """Throughput with the shadow as a share of without, per path and concurrency."""
    plain = {(r.path.split(",")[0], r.concurrency): r for r in rows if "no shadow" in r.path}
    result = {}
    for r in rows:
        key = (r.path.split(",")[0], r.concurrency)
        if "no shadow" not in r.path and key in plain:
            ratio = r.throughput_rps / plain[key].throughput_rps
            result[f"{key[0]} c={key[1]}"] = round(ratio, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="cxr_pneumonia")
    parser.add_argument("--shadow", type=int, default=2, help="the candidate version")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser.add_argument("--concurrency", type=ints, default=[1, 8, 32])
    parser.add_argument("--v1-concurrency", type=ints, default=[1, 8])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "shadow.json")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to prove it runs")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds, args.concurrency, args.v1_concurrency = 0.5, 1, [4], [2]
    rows = inprocess_rows(args) + end_to_end_rows(args)
    print_table(rows)
    ratios = overhead(rows)
    print(
        "\nthroughput with shadow / without: " + ", ".join(f"{k}: {v}" for k, v in ratios.items())
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": args.model, "shadow_version": args.shadow,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "onnxruntime": ort.__version__},
        "seconds_per_point": args.seconds, "rounds": args.rounds,
        "rows": [asdict(r) for r in rows], "throughput_ratio_with_shadow": ratios,
    }, indent=2))  # fmt: skip
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
