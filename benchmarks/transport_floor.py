"""The transport's floor: what one KServe v2 infer request costs when the server does
nothing at all, so what share of raw onnxruntime any server written on these stacks
could reach on these cores.

    python benchmarks/transport_floor.py                 # both protocols, c=32
    python benchmarks/v2_cost.py --floor                 # beside aidx's own costs

Two do-nothing servers, each in a process of its own, answer every infer request
with one prebuilt response of the model's output shapes (read from its config.pbtxt):
- HTTP: uvicorn with uvloop and httptools, as `aidx serve` runs, and a bare ASGI
  callable that reads the body and answers (no routing, auth, checks or metrics);
- gRPC: `grpc.aio` with the `GRPCInferenceService` servicer of tritonclient's proto,
  as aidx's, whose ModelInfer returns the prebuilt message.
The same clients as v2_cost.py (tritonclient.http.aio with binary tensors,
tritonclient.grpc.aio on one channel) drive them in a closed loop, and the server's
and the client's CPU per request are read as v2_cost.py reads them. With the model's
own CPU per item added, the best any server on these stacks could do is

    floor bound % of raw = raw core-ms per item (best batch)
                           / (model core-ms per item + floor server + floor client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from serving import REPOSITORY  # noqa: E402  (a script beside this one)

from aidx.inference.repository import load_entry  # noqa: E402
from tests.peers import free_port  # noqa: E402

Sender = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Shapes:
    """A model's input and outputs, one item each, FP32, from its config.pbtxt."""

    input_name: str
    input_dims: list[int]
    outputs: dict[str, list[int]]

    @classmethod
    def of(cls, model: str) -> Shapes:
        config = load_entry(REPOSITORY / model).config
        (spec,) = config.input
        outputs = {o.name: [1, *o.dims] for o in config.output}
        return cls(spec.name, [1, *spec.dims], outputs)


@dataclass(frozen=True)
class FloorRow:
    protocol: str
    concurrency: int
    requests: int
    server_cpu_ms_per_req: float
    client_cpu_ms_per_req: float
    throughput_rps: float


def _blobs(shapes: Shapes) -> dict[str, bytes]:
    return {name: np.zeros(dims, np.float32).tobytes() for name, dims in shapes.outputs.items()}


def serve_http(model: str, port: int) -> None:
    import uvicorn

    shapes = Shapes.of(model)
    blobs = _blobs(shapes)
    outputs = [
        {"name": name, "datatype": "FP32", "shape": shapes.outputs[name],
         "parameters": {"binary_data_size": len(blob)}}
        for name, blob in blobs.items()
    ]  # fmt: skip
    head = json.dumps({"model_name": model, "model_version": "1", "outputs": outputs}).encode()
    body = head + b"".join(blobs.values())
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(head)).encode()),
    ]

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_grpc(model: str, port: int) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    shapes = Shapes.of(model)
    answer = pb.ModelInferResponse(model_name=model, model_version="1")
    for name, blob in _blobs(shapes).items():
        answer.outputs.add(name=name, datatype="FP32", shape=shapes.outputs[name])
        answer.raw_output_contents.append(blob)

    class Floor(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request: object, context: object) -> object:
            return answer

    async def run() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 1 << 28)])
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(run())


def _wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def floor_server(protocol: str, model: str) -> Iterator[tuple[str, int]]:
    """A do-nothing server of `protocol` in its own process: (its address, its pid)."""
    port = free_port()
    command = [sys.executable, __file__, "serve", protocol, model, str(port)]
    process = subprocess.Popen(command)
    try:
        _wait_for_port(port)
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


def _sender(protocol: str, url: str, model: str, shapes: Shapes, c: int) -> tuple[Sender, Callable]:
    x = np.random.default_rng(1).uniform(-1024, 1024, shapes.input_dims).astype(np.float32)
    names = list(shapes.outputs)
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as grpc_aio

        gclient = grpc_aio.InferenceServerClient(url=url)
        gtensor = grpcclient.InferInput(shapes.input_name, list(x.shape), "FP32")
        gtensor.set_data_from_numpy(x)
        gwanted = [grpcclient.InferRequestedOutput(n) for n in names]

        async def gsend() -> None:
            (await gclient.infer(model, [gtensor], outputs=gwanted)).as_numpy(names[0])

        return gsend, gclient.close
    import tritonclient.http.aio as http_aio
    from tritonclient.http import InferInput, InferRequestedOutput

    hclient = http_aio.InferenceServerClient(url=url, conn_limit=c)
    htensor = InferInput(shapes.input_name, list(x.shape), "FP32")
    htensor.set_data_from_numpy(x, binary_data=True)
    hwanted = [InferRequestedOutput(n, binary_data=True) for n in names]

    async def hsend() -> None:
        (await hclient.infer(model, [htensor], outputs=hwanted)).as_numpy(names[0])

    return hsend, hclient.close


async def _drive(protocol: str, url: str, pid: int, model: str, c: int, n: int) -> FloorRow:
    from v2_cost import process_cpu_s  # the same CPU reading as aidx's rows

    send, close = _sender(protocol, url, model, Shapes.of(model), c)
    left = 0

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    for count in (4 * c, n):  # warm the connections first, then measure
        left = count
        server0, client0, wall0 = process_cpu_s(pid), time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
    wall_s = time.perf_counter() - wall0
    server_s, client_s = process_cpu_s(pid) - server0, time.process_time() - client0
    await close()
    return FloorRow(protocol, c, n, server_s / n * 1e3, client_s / n * 1e3, n / wall_s)


def measure_floor(protocol: str, model: str, concurrency: int, requests: int) -> FloorRow:
    with floor_server(protocol, model) as (url, pid):
        return asyncio.run(_drive(protocol, url, pid, model, concurrency, requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="cxr_pneumonia")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    print(f"{'proto':5} {'conc':>4} {'server ms/req':>13} {'client ms/req':>13} {'req/s':>7}")
    for protocol in ("http", "grpc"):
        row = measure_floor(protocol, args.model, args.concurrency, args.requests)
        print(f"{row.protocol:5} {row.concurrency:>4} {row.server_cpu_ms_per_req:>13.3f} "
              f"{row.client_cpu_ms_per_req:>13.3f} {row.throughput_rps:>7.0f}")  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        protocol, model, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
        (serve_grpc if protocol == "grpc" else serve_http)(model, port)
    else:
        main()
