"""What one KServe v2 request costs the server beyond the model, in core-ms, over HTTP
and over gRPC, and how far that lets /v2 come to raw onnxruntime on these cores.

    python benchmarks/v2_cost.py                    # 3000 requests at c=8 and at c=32
    python benchmarks/v2_cost.py --densenet         # also DenseNet-121 (needs aidx[xrv])
    python benchmarks/v2_cost.py --smoke            # seconds; proves it still works
    python benchmarks/v2_cost.py --protocol http --profile v2.txt [--native]
                                                    # also py-spy's collapsed stacks of
                                                    # the server during the last sweep
    python benchmarks/v2_cost.py --floor            # also do-nothing servers of each
                                                    # protocol (transport_floor.py): the
                                                    # most any server could reach here
    python benchmarks/v2_cost.py --against DIR --concurrency 32
                                                    # this checkout against another build
                                                    # (`pip install --no-deps --target DIR`
                                                    # of `git archive main`), both serving,
                                                    # driven in alternating rounds: a
                                                    # before/after that holds on a busy
                                                    # machine

Starts `aidx serve` (development mode, the demo cxr_pneumonia model), drives
`/v2/models/{m}/infer` with tritonclient.http (binary tensors) and ModelInfer with
tritonclient.grpc.aio in a closed loop, and reads the server process's CPU time (utime
+ stime of /proc/<pid>/stat, every thread) and this client's before and after a fixed
number of requests: CPU time, not wall time, so it holds on a machine whose cores are
shared; `loop` is the event loop's thread alone (every HTTP front-end step and the gRPC
handlers; none of the model's work). The model's own cost is raw onnxruntime's CPU per
item at the batch size the server's batcher reached (the service's session options), so

    beyond the model = server core-ms per request - model core-ms per item.

Raw onnxruntime's best batch (items/s and CPU per item) is measured in the same run.
`% of raw` is the throughput seen here over that best; on a shared machine it is noisy.
`bound % of raw` is steadier (CPU times, measured in the same run; still inflated alike
on a busy machine): when server and client share the cores and the model is
CPU-bound, /v2 can serve at most cores / (server + client core-ms per request) requests
a second, raw onnxruntime cores / (its core-ms per item at its best batch), so

    bound % of raw = raw core-ms per item (best batch) / (server + client core-ms per req).

A model whose compute dwarfs the front end (DenseNet-121) comes near 100%; the demo
model (under 1 core-ms per item) is bounded by the front ends' CPU.
Prints a table and saves JSON (benchmarks/results/v2_cost.json; with --smoke only
when --out is given).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as triton_aio
from tritonclient.http import InferInput, InferRequestedOutput

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from batching import (  # noqa: E402  (a script beside this one)
    raw_onnxruntime,
    sample_input,
    server_counters,
)
from serving import DEV_KEY, REPOSITORY, grpc_call, machine, service  # noqa: E402
from transport_floor import FloorRow, measure_floor  # noqa: E402

from tests.peers import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
XRV = "xrv_densenet"
RAW_BATCHES = [1, 4, 8, 16, 32]
Sender = Callable[[], Awaitable[None]]
Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Urls:
    http: str
    grpc: str


@dataclass(frozen=True)
class Sweep:
    server_s: float
    client_s: float
    batch_sum: float
    batch_count: float
    wall_s: float
    loop_s: float = 0.0  # the event loop's thread


@dataclass(frozen=True)
class Raw:
    """Raw onnxruntime at its best batch: the ceiling."""

    batch: int
    items_per_s: float
    cpu_ms_per_item: float


@dataclass
class CostRow:
    model: str
    protocol: str
    concurrency: int
    requests: int
    mean_batch: float
    server_cpu_ms_per_req: float
    model_cpu_ms_per_item: float
    beyond_model_cpu_ms_per_req: float
    client_cpu_ms_per_req: float
    loop_cpu_ms_per_req: float
    throughput_rps: float
    raw_best_items_per_s: float
    raw_best_cpu_ms_per_item: float
    pct_of_raw: float
    bound_pct_of_raw: float


def process_cpu_s(pid: int, thread: int | None = None) -> float:
    """utime + stime of a process, all its threads, in seconds; with `thread`, of that
    thread alone (the main thread, `pid`, runs the event loop: every HTTP front-end
    step and the gRPC handlers, none of the model's work)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # fields 14, 15 of stat(5)


def serving_env(model: str, repository: Path) -> dict[str, str]:
    """The service's settings here: one model, from `repository`, and a gRPC port."""
    return {
        "AIDX_ENABLED_MODELS": json.dumps([model]),
        "AIDX_MODEL_REPOSITORY": str(repository),
        "AIDX_GRPC_PORT": str(free_port()),
    }


async def http_sender(url: str, model: str, concurrency: int) -> tuple[Sender, Closer]:
    """tritonclient.http.aio with binary tensors, `concurrency` connections."""
    client = triton_aio.InferenceServerClient(url=url, conn_limit=concurrency)
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    meta = await client.get_model_metadata(model, headers=headers)
    (spec,) = meta["inputs"]
    x = sample_input(spec["shape"][1:], 1, seed=1)
    tensor = InferInput(spec["name"], list(x.shape), spec["datatype"])
    tensor.set_data_from_numpy(x, binary_data=True)
    names = [o["name"] for o in meta["outputs"]]
    outputs = [InferRequestedOutput(n, binary_data=True) for n in names]

    async def send() -> None:
        result = await client.infer(model, [tensor], outputs=outputs, headers=headers)
        result.as_numpy(names[0])

    return send, client.close


async def grpc_sender(url: str, model: str, concurrency: int) -> tuple[Sender, Closer]:
    """tritonclient.grpc.aio on one channel (HTTP/2 streams, as perf_analyzer's gRPC mode)."""
    client = grpc_aio.InferenceServerClient(url=url)
    headers = {"authorization": f"Bearer {DEV_KEY}"}
    send = await grpc_call(client, model, headers, lambda shape: sample_input(shape, 1, seed=1))
    return send, client.close


async def drive(
    urls: Urls, protocol: str, model: str, concurrency: int, requests: int, pid: int
) -> Sweep:
    """Server and client CPU, batches and wall time over `requests` requests."""
    make = grpc_sender if protocol == "grpc" else http_sender
    send, close = await make(urls.grpc if protocol == "grpc" else urls.http, model, concurrency)
    left = 4 * concurrency  # warm the connections and the batcher first

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    left = requests
    before = server_counters(urls.http, model)
    server0, client0, wall0 = process_cpu_s(pid), time.process_time(), time.perf_counter()
    loop0 = process_cpu_s(pid, pid)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall_s = time.perf_counter() - wall0
    server_s, client_s = process_cpu_s(pid) - server0, time.process_time() - client0
    loop_s = process_cpu_s(pid, pid) - loop0
    after = server_counters(urls.http, model)
    await close()
    batches = after.batch_count - before.batch_count
    return Sweep(server_s, client_s, after.batch_sum - before.batch_sum, batches, wall_s, loop_s)


def model_cpu_ms_per_item(path: Path, batch: int, seconds: float) -> float:
    (row,) = raw_onnxruntime(path, [batch], seconds)
    return row.extra["cpu_ms_per_item"]


def raw_best(path: Path, seconds: float) -> Raw:
    rows = raw_onnxruntime(path, RAW_BATCHES, seconds)
    best = max(rows, key=lambda r: r.throughput_rps)  # items/s: one request is a batch
    return Raw(int(best.mean_batch), best.throughput_rps, best.extra["cpu_ms_per_item"])


@contextmanager
def py_spy(pid: int, out: Path | None, native: bool = False) -> Iterator[None]:
    """py-spy's collapsed stacks of the server while the block runs (`out` None: none)."""
    if out is None:
        yield
        return
    spy = subprocess.Popen([
        str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
        "--format", "raw", "--rate", "250", "--output", str(out),
        *(["--native"] if native else ["--nonblocking"]),  # native frames need a pause
    ])  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it has
        spy.wait(60)


def measure(args: argparse.Namespace, model: str, repository: Path, requests: int) -> list[CostRow]:
    sweeps = []
    env = serving_env(model, repository)
    with service(env) as served:
        url, pid = served.url, served.pid
        urls = Urls(url, f"127.0.0.1:{env['AIDX_GRPC_PORT']}")
        last = (args.protocol[-1], args.concurrency[-1])
        for protocol in args.protocol:
            for concurrency in args.concurrency:
                profile = args.profile if (protocol, concurrency) == last else None
                with py_spy(pid, profile, args.native):
                    sweep = asyncio.run(drive(urls, protocol, model, concurrency, requests, pid))
                sweeps.append((protocol, concurrency, sweep))
    onnx = repository / model / "1" / "model.onnx"
    raw = raw_best(onnx, args.raw_seconds)
    rows = []
    for protocol, concurrency, sweep in sweeps:
        mean_batch = sweep.batch_sum / max(sweep.batch_count, 1)
        model_ms = model_cpu_ms_per_item(onnx, max(round(mean_batch), 1), args.raw_seconds)
        server_ms, client_ms = sweep.server_s / requests * 1e3, sweep.client_s / requests * 1e3
        throughput = requests / sweep.wall_s
        rows.append(CostRow(
            model, protocol, concurrency, requests, mean_batch, server_ms, model_ms,
            server_ms - model_ms, client_ms, sweep.loop_s / requests * 1e3, throughput,
            raw.items_per_s, raw.cpu_ms_per_item,
            100 * throughput / raw.items_per_s, 100 * raw.cpu_ms_per_item / (server_ms + client_ms),
        ))  # fmt: skip
    return rows


def densenet_repository(folder: str) -> Path:
    """DenseNet-121 exported into a temporary repository (`aidx models export-xrv`), in a
    process of its own (torch is heavy; this one stays small)."""
    export = [sys.executable, "-m", "aidx.service", "models", "export-xrv"]
    subprocess.run([*export, "--repository", folder, "--name", XRV], check=True, cwd=ROOT)
    return Path(folder)


def print_table(rows: list[CostRow]) -> None:
    print(
        f"\n{'model':14} {'proto':5} {'conc':>4} {'reqs':>5} {'batch':>5} {'server':>7} "
        f"{'loop':>7} {'model':>7} {'beyond':>7} {'client':>7} {'req/s':>7} {'raw/s':>7} "
        f"{'% raw':>6} {'bound %':>7}\n{'':14} {'':5} {'':>4} {'':>5} {'':>5} {'ms/req':>7} "
        f"{'ms/req':>7} {'ms/item':>7} {'ms/req':>7} {'ms/req':>7}   (core-ms; raw: best batch)"
    )
    for r in rows:
        print(
            f"{r.model:14} {r.protocol:5} {r.concurrency:>4} {r.requests:>5} "
            f"{r.mean_batch:>5.1f} {r.server_cpu_ms_per_req:>7.2f} {r.loop_cpu_ms_per_req:>7.2f} "
            f"{r.model_cpu_ms_per_item:>7.2f} {r.beyond_model_cpu_ms_per_req:>7.2f} "
            f"{r.client_cpu_ms_per_req:>7.2f} {r.throughput_rps:>7.0f} "
            f"{r.raw_best_items_per_s:>7.0f} {r.pct_of_raw:>6.1f} {r.bound_pct_of_raw:>7.1f}"
        )


def floor_rows(args: argparse.Namespace, rows: list[CostRow]) -> list[dict[str, float | str]]:
    """Each protocol's do-nothing server at the last concurrency, beside aidx's row:
    the bound with aidx's front end costing nothing beyond the transport."""
    found = []
    for row in rows:
        if row.model != args.model or row.concurrency != args.concurrency[-1]:
            continue
        # at least 1000 requests: a do-nothing server's CPU is a few 10 ms clock ticks
        requests = max(args.requests, 1000)
        floor: FloorRow = measure_floor(row.protocol, row.model, row.concurrency, requests)
        floor_total = row.model_cpu_ms_per_item + floor.server_cpu_ms_per_req
        floor_total += floor.client_cpu_ms_per_req
        found.append({
            **asdict(floor),
            "aidx_beyond_model_cpu_ms_per_req": row.beyond_model_cpu_ms_per_req,
            "aidx_bound_pct_of_raw": row.bound_pct_of_raw,
            "floor_bound_pct_of_raw": 100 * row.raw_best_cpu_ms_per_item / floor_total,
        })  # fmt: skip
    print(f"\n{'floor':5} {'conc':>4} {'server':>7} {'client':>7} {'req/s':>7} "
          f"{'aidx beyond':>11} {'aidx bound %':>12} {'floor bound %':>13}")  # fmt: skip
    for f in found:
        aidx = f"{f['aidx_beyond_model_cpu_ms_per_req']:>11.2f} {f['aidx_bound_pct_of_raw']:>12.1f}"
        print(f"{f['protocol']:5} {f['concurrency']:>4} {f['server_cpu_ms_per_req']:>7.3f} "
              f"{f['client_cpu_ms_per_req']:>7.3f} {f['throughput_rps']:>7.0f} "
              f"{aidx} {f['floor_bound_pct_of_raw']:>13.1f}")  # fmt: skip
    return found


def against(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """This checkout and the build installed in `args.against` (`pip install --target
    DIR` of another commit, e.g. main), both serving at once and driven in turn, a
    sweep of each per round, alternating which goes first: load from other work on
    the machine falls on both alike. Core-ms per request, summed over the rounds."""
    totals: dict[str, list[float]] = {}
    site = str(args.against)
    with contextlib.ExitStack() as stack:
        servers = {}
        for name in ("against", "this"):
            env = serving_env(args.model, REPOSITORY)
            if name == "against":
                env["PYTHONPATH"] = site  # ahead of the editable install's path
            served = stack.enter_context(service(env))
            urls = Urls(served.url, f"127.0.0.1:{env['AIDX_GRPC_PORT']}")
            servers[name] = (urls, served.pid)
        for protocol in args.protocol:
            for round_ in range(args.rounds):
                order = ("against", "this") if round_ % 2 == 0 else ("this", "against")
                for name in order:
                    urls, pid = servers[name]
                    c = args.concurrency[-1]
                    sweep = asyncio.run(drive(urls, protocol, args.model, c, args.requests, pid))
                    total = totals.setdefault(f"{name} {protocol}", [0.0] * 5)
                    values = (sweep.server_s, sweep.loop_s, sweep.client_s, sweep.wall_s, 1)
                    for i, value in enumerate(values):
                        total[i] += value
    n = args.requests
    result = {}
    print(f"\n{'build':8} {'proto':5} {'server ms/req':>13} {'loop ms/req':>12} "
          f"{'client ms/req':>13} {'req/s':>7}")  # fmt: skip
    for key, (server_s, loop_s, client_s, wall_s, rounds) in totals.items():
        row = {
            "server_cpu_ms_per_req": server_s / (n * rounds) * 1e3,
            "loop_cpu_ms_per_req": loop_s / (n * rounds) * 1e3,
            "client_cpu_ms_per_req": client_s / (n * rounds) * 1e3,
            "throughput_rps": n * rounds / wall_s,
        }
        result[key] = row
        build, protocol = key.split()
        print(f"{build:8} {protocol:5} {row['server_cpu_ms_per_req']:>13.3f} "
              f"{row['loop_cpu_ms_per_req']:>12.3f} {row['client_cpu_ms_per_req']:>13.3f} "
              f"{row['throughput_rps']:>7.0f}")  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="cxr_pneumonia")
    parser.add_argument("--requests", type=int, default=3000, help="per point")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32]
    )
    parser.add_argument(
        "--protocol", type=lambda s: s.split(","), default=["http", "grpc"], help="http,grpc"
    )
    parser.add_argument("--densenet", action="store_true", help="also DenseNet-121 (aidx[xrv])")
    parser.add_argument("--densenet-requests", type=int, default=300, help="per point")
    parser.add_argument("--raw-seconds", type=float, default=3.0, help="raw onnxruntime")
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks (last sweep)")
    parser.add_argument(
        "--against", type=Path, help="a build (pip install --target) to compare, interleaved"
    )
    parser.add_argument("--rounds", type=int, default=6, help="with --against")
    parser.add_argument("--native", action="store_true", help="py-spy with native frames")
    parser.add_argument("--floor", action="store_true", help="also do-nothing servers")
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/v2_cost.json")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to prove it runs")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.densenet_requests, args.concurrency = 50, 10, [8]
        args.raw_seconds = 0.3
    out = args.out or (None if args.smoke else ROOT / "benchmarks" / "results" / "v2_cost.json")
    if args.against is not None:
        compared = against(args)
        if args.out is not None:
            args.out.write_text(json.dumps({
                "against": str(args.against), "model": args.model,
                "concurrency": args.concurrency[-1], "requests_per_sweep": args.requests,
                "rounds": args.rounds, "machine": {"cpu_count": os.cpu_count()},
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "rows": compared,
            }, indent=2))  # fmt: skip
        return
    rows = measure(args, args.model, REPOSITORY, args.requests)
    if args.densenet:
        folder = tempfile.mkdtemp(prefix="aidx-xrv-")
        try:
            rows += measure(args, XRV, densenet_repository(folder), args.densenet_requests)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print_table(rows)
    floors = floor_rows(args, rows) if args.floor else []
    if out is None:
        print("\n(--smoke: nothing saved; give --out to save)")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": args.model,
        "models": [args.model, *([XRV] if args.densenet else [])],
        "label": args.label,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": [asdict(r) for r in rows],
        "floor": floors,
    }, indent=2))  # fmt: skip
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
