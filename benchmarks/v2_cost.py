"""What one KServe v2 request over HTTP costs the server beyond the model, in core-ms.

    python benchmarks/v2_cost.py                    # 3000 requests at c=8 and at c=32
    python benchmarks/v2_cost.py --smoke            # seconds; proves it still works
    python benchmarks/v2_cost.py --profile v2.txt   # also py-spy's collapsed stacks of
                                                    # the server during the last sweep

Starts `aidx serve` (development mode, the demo cxr_pneumonia model), drives
`/v2/models/{m}/infer` with tritonclient.http (binary tensors) in a closed loop, and
reads the server process's CPU time (utime + stime of /proc/<pid>/stat, every thread)
before and after a fixed number of requests: CPU time, not wall time, so it holds on a
machine whose cores are shared. The model's own cost is raw onnxruntime's CPU per item
at the batch size the server's batcher reached (the service's session options), so

    beyond the model = server core-ms per request - model core-ms per item.

Prints a table and saves JSON (benchmarks/results/v2_cost.json; with --smoke only
when --out is given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import tritonclient.http.aio as triton_aio
from tritonclient.http import InferInput, InferRequestedOutput

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from batching import (  # noqa: E402  (a script beside this one)
    raw_onnxruntime,
    sample_input,
    server_counters,
)
from serving import DEV_KEY, REPOSITORY, machine, service  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass
class CostRow:
    concurrency: int
    requests: int
    mean_batch: float
    server_cpu_ms_per_req: float
    model_cpu_ms_per_item: float
    beyond_model_cpu_ms_per_req: float
    client_cpu_ms_per_req: float


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # fields 14, 15 of stat(5)


async def drive(
    url: str, model: str, concurrency: int, requests: int, pid: int
) -> tuple[float, float, float, float]:
    """(server CPU s, client CPU s, batch sum, batch count) over `requests` requests."""
    client = triton_aio.InferenceServerClient(url=url, conn_limit=concurrency)
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    meta = await client.get_model_metadata(model, headers=headers)
    (spec,) = meta["inputs"]
    x = sample_input(spec["shape"][1:], 1, seed=1)
    tensor = InferInput(spec["name"], list(x.shape), spec["datatype"])
    tensor.set_data_from_numpy(x, binary_data=True)
    names = [o["name"] for o in meta["outputs"]]
    outputs = [InferRequestedOutput(n, binary_data=True) for n in names]
    left = 4 * concurrency  # warm the connections and the batcher first

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            result = await client.infer(model, [tensor], outputs=outputs, headers=headers)
            result.as_numpy(names[0])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    left = requests
    before = server_counters(url, model)
    server0, client0 = process_cpu_s(pid), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    server_s, client_s = process_cpu_s(pid) - server0, time.process_time() - client0
    after = server_counters(url, model)
    await client.close()
    batches = after.batch_count - before.batch_count
    return server_s, client_s, after.batch_sum - before.batch_sum, batches


def model_cpu_ms_per_item(model: str, batch: int, seconds: float) -> float:
    (row,) = raw_onnxruntime(REPOSITORY / model / "1" / "model.onnx", [batch], seconds)
    return row.extra["cpu_ms_per_item"]


@contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy's collapsed stacks of the server while the block runs (`out` None: none)."""
    if out is None:
        yield
        return
    spy = subprocess.Popen([
        str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
        "--format", "raw", "--rate", "250", "--output", str(out), "--nonblocking",
    ])  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it has
        spy.wait(60)


def measure(args: argparse.Namespace) -> list[CostRow]:
    rows = []
    with service({"AIDX_ENABLED_MODELS": json.dumps([args.model])}) as served:
        url, pid = served.url, served.pid
        for i, concurrency in enumerate(args.concurrency):
            last = i == len(args.concurrency) - 1
            with py_spy(pid, args.profile if last else None):
                server_s, client_s, batch_sum, batch_count = asyncio.run(
                    drive(url, args.model, concurrency, args.requests, pid)
                )
            mean_batch = batch_sum / max(batch_count, 1)
            rows.append((concurrency, server_s, client_s, mean_batch))
    costs = []
    for concurrency, server_s, client_s, mean_batch in rows:
        model_ms = model_cpu_ms_per_item(args.model, max(round(mean_batch), 1), args.raw_seconds)
        server_ms = server_s / args.requests * 1e3
        costs.append(CostRow(
            concurrency, args.requests, mean_batch, server_ms, model_ms, server_ms - model_ms,
            client_s / args.requests * 1e3,
        ))  # fmt: skip
    return costs


def print_table(rows: list[CostRow]) -> None:
    print(
        f"\n{'conc':>5} {'reqs':>6} {'batch':>6} {'server core-ms/req':>19} "
        f"{'model core-ms/item':>19} {'beyond model':>13} {'client core-ms/req':>19}"
    )
    for r in rows:
        print(
            f"{r.concurrency:>5} {r.requests:>6} {r.mean_batch:>6.1f} "
            f"{r.server_cpu_ms_per_req:>19.3f} {r.model_cpu_ms_per_item:>19.3f} "
            f"{r.beyond_model_cpu_ms_per_req:>13.3f} {r.client_cpu_ms_per_req:>19.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="cxr_pneumonia")
    parser.add_argument("--requests", type=int, default=3000, help="per concurrency")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32]
    )
    parser.add_argument("--raw-seconds", type=float, default=3.0, help="raw onnxruntime")
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks (last sweep)")
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/v2_cost.json")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to prove it runs")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.concurrency, args.raw_seconds = 50, [8], 0.3
    out = args.out or (None if args.smoke else ROOT / "benchmarks" / "results" / "v2_cost.json")
    rows = measure(args)
    print_table(rows)
    if out is None:
        print("\n(--smoke: nothing saved; give --out to save)")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": args.model,
        "label": args.label,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [asdict(r) for r in rows],
    }, indent=2))  # fmt: skip
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
