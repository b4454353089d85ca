"""The benchmarks' own `aidx serve`: its environment, start and stop, and the cells and
machine block of their tables. Imported by the scripts beside it (benchmarks/ is their
folder, as for baseline.py):

    from serving import DEV_KEY, service

    with service({"AIDX_ENABLED_MODELS": '["cxr_pneumonia"]'}) as served:
        ...  # served.url is host:port, served.pid the server process
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpc_aio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # the tests' peer helpers
from tests.peers import free_port  # noqa: E402
from tests.waiting import wait_serving  # noqa: E402

REPOSITORY = Path(os.environ.get("AIDX_MODEL_REPOSITORY", ROOT / "models"))
DEV_KEY = "benchmark-development-key-0123456789"


@dataclass(frozen=True)
class Served:
    url: str  # host:port
    pid: int


def service_env(var_dir: str, port: int, extra_env: dict[str, str]) -> dict[str, str]:
    """Development mode with the benchmark key, the model repository, a fresh var/."""
    return {
        **os.environ,
        "AIDX_MODE": "development",
        "AIDX_DEV_API_KEY": DEV_KEY,
        "AIDX_VAR_DIR": var_dir,
        "AIDX_PORT": str(port),
        "AIDX_HOST": "127.0.0.1",
        "AIDX_MODEL_REPOSITORY": str(REPOSITORY),
        # RG1 is out of distribution for the demo model: `warn` still runs the model,
        # which is what /v1/cxr end to end measures (not the not-assessed shortcut)
        "AIDX_OOD_POLICY": "warn",
        **extra_env,
    }


@contextmanager
def service(extra_env: dict[str, str] | None = None) -> Iterator[Served]:
    """`aidx serve` on a free port until the block ends; `extra_env`: further AIDX_*
    settings (the models to enable, a shadow version, a gRPC port)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as var:
        command = [sys.executable, "-m", "aidx.service", "serve", "--log-level", "warning"]
        process = subprocess.Popen(command, env=service_env(var, port, extra_env or {}))
        url = f"127.0.0.1:{port}"
        try:
            wait_serving(f"http://{url}/readyz", process, what="aidx serve", timeout_s=300)
            yield Served(url, process.pid)
        finally:
            process.terminate()
            process.wait(30)


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """os.environ with `values` while the block runs (a service started in it sees them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cell(value: float | None, width: int = 8, digits: int = 2) -> str:
    """A right-aligned number, or blanks where a row has none."""
    return f"{value:>{width}.{digits}f}" if value is not None else " " * width


def machine(**extra: str) -> dict[str, object]:
    """What the saved JSON says about the machine a run measured."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        **extra,
    }


async def grpc_call(
    client: grpc_aio.InferenceServerClient,
    model: str,
    headers: dict[str, str] | None,
    make_input: Callable[[list[int]], np.ndarray],
) -> Callable[[], Awaitable[None]]:
    """One call of `model` through tritonclient.grpc.aio: the input made by
    `make_input(shape without the batch)` from the model's metadata, every output asked
    for, the first one read back."""
    meta = await client.get_model_metadata(model, headers=headers, as_json=True)
    (spec,) = meta["inputs"]
    x = make_input([int(d) for d in spec["shape"][1:]])
    tensor = grpcclient.InferInput(spec["name"], list(x.shape), spec["datatype"])
    tensor.set_data_from_numpy(x)
    names = [o["name"] for o in meta["outputs"]]
    outputs = [grpcclient.InferRequestedOutput(n) for n in names]

    async def call() -> None:
        result = await client.infer(model, [tensor], outputs=outputs, headers=headers)
        result.as_numpy(names[0])

    return call
