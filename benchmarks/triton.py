"""Triton benchmark: the same model (cxr_pneumonia) through aidx with the in-process
onnxruntime backend vs aidx with AIDX_BACKEND=triton on a real Triton Inference
Server, at concurrency 1/8/32; plus the Triton server alone (tritonclient straight to
it, no aidx) as the floor of the remote path.

    python benchmarks/triton.py              # ~5 minutes on 2 cores
    python benchmarks/triton.py --densenet   # also DenseNet-121 rows (~4 minutes more)
    python benchmarks/triton.py --smoke      # seconds; proves it still works
    python benchmarks/triton.py --densenet-only --baseline main   # DenseNet-121 only,
        # aidx at `main` (before) and this checkout (after) beside Triton, one run

The Triton server is tests/peers/pytriton_peer.py under `.peers/pytriton` (`make
peers`): Triton 2.51 from nvidia-pytriton 0.7.0, Python backend, an onnxruntime
session per model, Triton's dynamic batcher with config.pbtxt's delay. The two aidx
services run one after the other (never both at once), each the only user of the
cores while measured; the Triton server stays up (idle during the in-process run).

Rows: "/v1/cxr" is DICOM end to end (decode, preprocess, model, findings);
"/v2 infer" is one 1x1x224x224 tensor per request through aidx's KServe endpoint
(tritonclient, binary); "/v2 gRPC" the same tensor through aidx's KServe v2 over gRPC
(tritonclient.grpc.aio, one channel). "Triton alone" is tritonclient straight to the
Triton server, over HTTP and over gRPC. `batch` is aidx's mean batch (its /metrics);
`triton batch` is Triton's mean executed batch (nv_inference_count /
nv_inference_exec_count); `srv cpu` is aidx's process CPU per request (core-ms);
`busy` is the share of the time aidx's model was computing (compute seconds over the
elapsed seconds: one instance) and `gap ms` the mean time per batch it was not (its
idle wait for the next batch), both from aidx's /metrics; they depend less on the
machine's other load than req/s does.
With --densenet, the production-sized torchxrayvision DenseNet-121 (`aidx models
export-xrv`, untrained weights: the same compute as real ones; needs `aidx[xrv]`) is
exported to a temporary repository and measured beside the demo model: aidx in-process
over HTTP and gRPC, and the Triton server alone over HTTP and gRPC, rows marked
"· xrv_densenet". With --baseline REF, DenseNet-121 is also served by REF's code
(benchmarks/baseline.py), rows "· aidx REF", before this checkout's in the same run.
Closed loop: each of C clients sends its next request when the last one returns.
Prints one table and saves JSON (benchmarks/results/triton.json; with --smoke only
when --out is given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import httpx
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as triton_aio
from pydicom.data import get_testdata_file
from tritonclient.http import InferInput, InferRequestedOutput

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from baseline import checkout  # noqa: E402  (a script beside this one)
from batching import (  # noqa: E402  (a script beside this one)
    Row,
    closed_loop,
    cpu_per_request_ms,
    percentiles,
    sample_input,
    server_counters,
    sweep_v1,
    sweep_v2,
)
from serving import (  # noqa: E402  (a script beside this one)
    DEV_KEY,
    REPOSITORY,
    cell,
    environment,
    free_port,
    grpc_call,
    machine,
    service,
)

from tests.peers.triton import TritonPeer, pytriton_missing  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def triton_counters(peer: TritonPeer, model: str) -> tuple[float, float]:
    """(inferences, executions) of `model` from Triton's Prometheus metrics."""
    text = httpx.get(f"http://127.0.0.1:{peer.metrics_port}/metrics", timeout=10).text
    inferences = executions = 0.0
    for line in text.splitlines():
        if f'model="{model}"' not in line:
            continue
        if line.startswith("nv_inference_count{"):
            inferences += float(line.split()[-1])
        elif line.startswith("nv_inference_exec_count{"):
            executions += float(line.split()[-1])
    return inferences, executions


async def sweep_triton_direct(
    peer: TritonPeer, model: str, concurrency: int, seconds: float
) -> Row:
    """tritonclient straight to Triton: the remote path without aidx."""
    client = triton_aio.InferenceServerClient(url=peer.url, conn_limit=concurrency)
    meta = await client.get_model_metadata(model)
    (spec,) = meta["inputs"]
    x = sample_input(spec["shape"][1:], 1, seed=1)
    tensor = InferInput(spec["name"], list(x.shape), spec["datatype"])
    tensor.set_data_from_numpy(x, binary_data=True)
    names = [o["name"] for o in meta["outputs"]]
    outputs = [InferRequestedOutput(n, binary_data=True) for n in names]

    async def send() -> dict[str, float]:
        result = await client.infer(model, [tensor], outputs=outputs)
        result.as_numpy(names[0])
        return {}

    await send()
    latencies, elapsed, _ = await closed_loop(concurrency, seconds, send)
    await client.close()
    p50, p95, p99 = percentiles(latencies)
    return Row(
        "Triton alone (tritonclient)",
        concurrency,
        len(latencies),
        len(latencies) / elapsed,
        p50,
        p95,
        p99,
        0.0,
        {},
    )


async def sweep_grpc(
    url: str,
    model: str,
    concurrency: int,
    seconds: float,
    *,
    path: str,
    key: str | None = None,
    metrics_url: str | None = None,
) -> Row:
    """tritonclient.grpc.aio on one channel (HTTP/2 streams, as perf_analyzer's gRPC
    mode): `url` is aidx's AIDX_GRPC_PORT (then `metrics_url` is its HTTP, for the
    batch and CPU counters) or Triton's gRPC port."""
    client = grpc_aio.InferenceServerClient(url=url)
    headers = {"authorization": f"Bearer {key}"} if key else None
    call = await grpc_call(client, model, headers, lambda shape: sample_input(shape, 1, seed=1))

    async def send() -> dict[str, float]:
        await call()
        return {}

    await send()
    before = server_counters(metrics_url, model) if metrics_url else None
    latencies, elapsed, extras = await closed_loop(concurrency, seconds, send)
    after = server_counters(metrics_url, model) if metrics_url else None
    await client.close()
    p50, p95, p99 = percentiles(latencies)
    extra, batch = {}, 0.0
    if before is not None and after is not None:
        batch = after.mean_batch_since(before)
        extra = cpu_per_request_ms(before, after, extras.pop("client_cpu_s"), len(latencies))
        extra["compute_ms_per_batch"] = after.compute_ms_per_batch_since(before)
    return Row(path, concurrency, len(latencies), len(latencies) / elapsed, p50, p95, p99,
               batch, extra)  # fmt: skip


async def measure(
    url: str,
    grpc_url: str,
    backend: str,
    peer: TritonPeer,
    args: argparse.Namespace,
    dicom: bytes | None,
    model: str,
) -> list[Row]:
    """aidx's rows at each concurrency; `dicom` None: /v2 only (no /v1/cxr rows)."""
    rows = []
    for concurrency in args.concurrency:
        for path, sweep in (
            ("/v1/cxr", lambda c: sweep_v1(url, DEV_KEY, model, dicom, c, args.seconds)),
            ("/v2 infer", lambda c: sweep_v2(url, DEV_KEY, model, c, args.seconds)),
            ("/v2 gRPC", lambda c: sweep_grpc(
                grpc_url, model, c, args.seconds, path="/v2 gRPC", key=DEV_KEY,
                metrics_url=url)),
        ):  # fmt: skip
            if path == "/v1/cxr" and dicom is None:
                continue
            before = triton_counters(peer, model)
            row = await sweep(concurrency)
            after = triton_counters(peer, model)
            extra = dict(row.extra) | model_busy(row)
            if after[1] > before[1]:
                extra["triton_mean_batch"] = (after[0] - before[0]) / (after[1] - before[1])
            rows.append(replace(row, path=f"{path} · aidx {backend}", extra=extra))
    return rows


def model_busy(row: Row) -> dict[str, float]:
    """The share of the elapsed time aidx's model computed, and the time per batch it
    waited for the next one (batches = requests / mean batch; one instance)."""
    compute_ms = row.extra.get("compute_ms_per_batch")
    if compute_ms is None or row.mean_batch <= 0 or row.throughput_rps <= 0:
        return {}
    batch_period_ms = row.mean_batch / row.throughput_rps * 1e3
    return {
        "model_busy": min(compute_ms / batch_period_ms, 1.0),
        "model_gap_ms_per_batch": max(batch_period_ms - compute_ms, 0.0),
    }


def print_table(rows: list[Row]) -> None:
    print(
        f"\n{'path':58} {'conc':>5} {'reqs':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'batch':>6} {'triton batch':>12} {'srv cpu':>8} {'busy':>5} "
        f"{'gap ms':>7}"
    )
    for r in rows:
        shown = cell(r.extra.get("triton_mean_batch"), 12, 1)
        cpu_shown = cell(r.extra.get("server_cpu_ms_per_req"))
        busy = cell(r.extra.get("model_busy"), 5)
        gap = cell(r.extra.get("model_gap_ms_per_batch"), 7, 1)
        print(
            f"{r.path:58} {r.concurrency:>5} {r.requests:>6} {r.throughput_rps:>8.1f} "
            f"{r.p50_ms:>8.1f} {r.p95_ms:>8.1f} {r.p99_ms:>8.1f} {r.mean_batch:>6.1f} {shown} "
            f"{cpu_shown} {busy} {gap}"
        )


def summarize(rows: list[Row]) -> dict[str, object]:
    """Remote over in-process, per path and concurrency: throughput ratio, p50 added."""
    summary: dict[str, object] = {}
    by_key = {(r.path, r.concurrency): r for r in rows}
    for path in ("/v1/cxr", "/v2 infer", "/v2 gRPC"):
        for concurrency in sorted({r.concurrency for r in rows}):
            local = by_key.get((f"{path} · aidx in-process", concurrency))
            remote = by_key.get((f"{path} · aidx → Triton", concurrency))
            if local is None or remote is None:
                continue
            summary[f"{path} c={concurrency} triton/in-process throughput"] = round(
                remote.throughput_rps / local.throughput_rps, 2
            )
            summary[f"{path} c={concurrency} p50 added by Triton ms"] = round(
                remote.p50_ms - local.p50_ms, 1
            )
    summary |= aidx_against_triton(by_key)
    summary |= aidx_against_triton(by_key, f" · {XRV}")
    for label in {
        r.path.split(" · aidx ")[1].split(" · ")[0] for r in rows if " · aidx " in r.path
    }:
        if label not in ("in-process", "→ Triton"):  # a --baseline revision
            summary |= aidx_against_triton(by_key, f" · {XRV}", label)
    return summary


TRITON_ALONE = {"/v2 infer": "Triton alone (tritonclient)",
                "/v2 gRPC": "Triton alone (tritonclient gRPC)"}  # fmt: skip


def aidx_against_triton(
    by_key: dict[tuple[str, int], Row], suffix: str = "", label: str = "in-process"
) -> dict[str, object]:
    """aidx in-process over the Triton server alone, same protocol and concurrency:
    above 1, aidx serves more requests per second than Triton on these cores.
    `suffix`: the rows of another model (" · xrv_densenet"); `label`: aidx's rows
    ("in-process": this checkout, or a --baseline revision)."""
    summary: dict[str, object] = {}
    for path, triton_path in TRITON_ALONE.items():
        for (name, concurrency), triton in sorted(by_key.items()):
            aidx = by_key.get((f"{path} · aidx {label}{suffix}", concurrency))
            if name != triton_path + suffix or aidx is None:
                continue
            who = "aidx" if label == "in-process" else f"aidx {label}"
            summary[f"{path}{suffix} c={concurrency} {who}/Triton throughput"] = round(
                aidx.throughput_rps / triton.throughput_rps, 2
            )
    return summary


def triton_alone(peer: TritonPeer, args: argparse.Namespace, model: str) -> list[Row]:
    """tritonclient straight to the Triton server, HTTP then gRPC, at each concurrency."""
    rows = []
    for concurrency in args.concurrency:
        for sweep in (
            lambda c: sweep_triton_direct(peer, model, c, args.seconds),
            lambda c: sweep_grpc(peer.grpc_url, model, c, args.seconds,
                                 path=TRITON_ALONE["/v2 gRPC"]),
        ):  # fmt: skip
            before = triton_counters(peer, model)
            row = asyncio.run(sweep(concurrency))
            after = triton_counters(peer, model)
            if after[1] > before[1]:
                row.extra["triton_mean_batch"] = (after[0] - before[0]) / (after[1] - before[1])
            rows.append(row)
    return rows


XRV = "xrv_densenet"


def densenet_rows(args: argparse.Namespace) -> list[Row]:
    """DenseNet-121 (exported to a temporary repository): aidx in-process over HTTP and
    gRPC (with --baseline, first with that revision's code), then the Triton server
    alone over both, each row marked with the model."""
    with tempfile.TemporaryDirectory(prefix="aidx-xrv-") as folder:
        repository = Path(folder) / "models"
        # in a process of its own: torch probes for a package named `triton`, which in
        # this one is this script
        export = [sys.executable, "-m", "aidx.service", "models", "export-xrv"]
        subprocess.run([*export, "--repository", repository, "--name", XRV], check=True, cwd=ROOT)
        codes = {"in-process": None}
        if args.baseline:
            codes = {args.baseline: checkout(args.baseline, Path(folder) / "baseline"), **codes}
        peer = TritonPeer(repository, only=[XRV]).start()
        grpc_port = free_port()
        grpc_url = f"127.0.0.1:{grpc_port}"
        local: list[Row] = []
        try:
            for label, code in codes.items():
                code_env = {"PYTHONPATH": str(code)} if code else {}
                with (
                    environment(
                        AIDX_ENABLED_MODELS=json.dumps([XRV]),
                        AIDX_GRPC_PORT=str(grpc_port),
                        **code_env,
                    ),
                    service({"AIDX_MODEL_REPOSITORY": str(repository)}) as served,
                ):
                    local += asyncio.run(
                        measure(served.url, grpc_url, label, peer, args, None, XRV)
                    )
            alone = triton_alone(peer, args, XRV)
        finally:
            peer.stop()
            shutil.rmtree(peer.workdir, ignore_errors=True)
    return [replace(r, path=f"{r.path} · {XRV}") for r in local + alone]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="cxr_pneumonia", help="a CXR-pipeline model")
    parser.add_argument("--seconds", type=float, default=8.0, help="per point")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32]
    )
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/triton.json")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to prove it runs")
    parser.add_argument(
        "--densenet", action="store_true", help="also DenseNet-121 rows (slow; needs aidx[xrv])"
    )
    parser.add_argument("--densenet-only", action="store_true", help="only the DenseNet-121 rows")
    parser.add_argument(
        "--baseline", help="a git ref: DenseNet-121 also served by its code (before/after)"
    )
    args = parser.parse_args()
    args.densenet = args.densenet or args.densenet_only or bool(args.baseline)
    if args.smoke:
        args.seconds, args.concurrency = 0.3, [1, 4]
    name = "triton-densenet.json" if args.densenet_only else "triton.json"
    out = args.out or (None if args.smoke else ROOT / "benchmarks" / "results" / name)
    missing = pytriton_missing()
    if missing:
        raise SystemExit(missing)
    rows = [] if args.densenet_only else demo_rows(args)
    rows += densenet_rows(args) if args.densenet else []
    print_table(rows)
    summary = summarize(rows)
    print("\n" + "\n".join(f"{k}: {v}" for k, v in summary.items()))
    if out is None:
        print("\n(--smoke: nothing saved; give --out to save)")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "model": args.model,
                "models": [
                    *([] if args.densenet_only else [args.model]),
                    *([XRV] if args.densenet else []),
                ],
                "baseline": args.baseline,
                "machine": machine(
                    triton="2.51 (nvidia-pytriton 0.7.0, Python backend + onnxruntime)"
                ),
                "seconds_per_point": args.seconds,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "rows": [asdict(r) for r in rows],
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"\nsaved {out}")


def demo_rows(args: argparse.Namespace) -> list[Row]:
    """The demo model: aidx in-process, aidx → Triton, and the Triton server alone."""
    dicom = Path(get_testdata_file("RG1_UNCR.dcm")).read_bytes()
    peer = TritonPeer(REPOSITORY, only=[args.model]).start()
    grpc_port = free_port()
    grpc_url = f"127.0.0.1:{grpc_port}"
    try:
        with environment(
            AIDX_ENABLED_MODELS=json.dumps([args.model]), AIDX_GRPC_PORT=str(grpc_port)
        ):
            with service() as served:
                local = asyncio.run(
                    measure(served.url, grpc_url, "in-process", peer, args, dicom, args.model)
                )
            with (
                environment(
                    AIDX_BACKEND="triton", AIDX_TRITON_URL=peer.url, AIDX_TRITON_POLL_S="1"
                ),
                service() as served,
            ):
                remote = asyncio.run(
                    measure(served.url, grpc_url, "→ Triton", peer, args, dicom, args.model)
                )
        alone = triton_alone(peer, args, args.model)
    finally:
        peer.stop()
        shutil.rmtree(peer.workdir, ignore_errors=True)
    return local + remote + alone


if __name__ == "__main__":
    main()
