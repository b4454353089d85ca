"""A real NVIDIA Triton Inference Server serving aidx's model repository, for tests
and benchmarks of AIDX_BACKEND=triton.

Runs with the interpreter of `.peers/pytriton` (made by `make peers`: nvidia-pytriton
0.7.0, which bundles Triton 2.51's `tritonserver` with the Python backend, numpy<2,
CPU onnxruntime); it does not import aidx. Every model in the repository that aidx's
in-process backend would serve (a folder with a config.pbtxt and <version>/model.onnx)
is bound as a PyTriton model under the same name, version, input/output names,
datatypes, dims and max_batch_size, with Triton's dynamic batcher on (the delay and
preferred batch sizes from config.pbtxt). Inside, an onnxruntime session runs the
batch Triton formed.

    .peers/pytriton/bin/python tests/peers/pytriton_peer.py --models models \
        --http-port 8000 --grpc-port 8001 --metrics-port 8002 [--model cxr_pneumonia ...]

Everything listens on 127.0.0.1. Triton's Python-backend stub links against
libpython: LD_LIBRARY_PATH must hold this interpreter's LIBDIR; when it does not, the
script re-executes itself with it set. SIGTERM/SIGINT stop Triton and exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Any

import numpy as np


def _ensure_libdir() -> None:
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])
        os.execv(sys.executable, [sys.executable, *sys.argv])


DTYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}


def read_config(path: Path) -> Any:
    """config.pbtxt as Triton's own ModelConfig message (shipped with tritonclient)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def model_version(directory: Path) -> int | None:
    """The version aidx serves: the one card.md names when its folder has a model.onnx
    (a candidate folder beside it is not served here), else the newest such folder."""
    versions = sorted(
        int(p.name)
        for p in directory.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "model.onnx").is_file()
    )
    card = directory / "card.md"
    named = re.search(r"^version:\s*(\d+)\s*$", card.read_text(), re.M) if card.is_file() else None
    if named and int(named[1]) in versions:
        return int(named[1])
    return versions[-1] if versions else None


def make_infer(session: Any, output_names: list[str]) -> Any:
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(output_names, session.run(output_names, inputs), strict=True))

    return infer


def bind_all(triton: Any, root: Path, only: list[str] | None, threads: int) -> list[str]:
    import onnxruntime as ort
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from tritonclient.grpc import model_config_pb2

    type_name = model_config_pb2.DataType.Name
    bound = []
    for directory in sorted(p for p in root.iterdir() if (p / "config.pbtxt").is_file()):
        if only and directory.name not in only:
            continue
        config = read_config(directory / "config.pbtxt")
        version = model_version(directory)
        if version is None:
            logging.warning("%s: no <version>/model.onnx, not served", directory.name)
            continue
        options = ort.SessionOptions()
        # as aidx's in-process sessions: threads 0 = onnxruntime decides, no spinning
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(directory / str(version) / "model.onnx"),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

        def tensors(specs: Any) -> list[Any]:
            return [
                Tensor(name=s.name, dtype=DTYPES[type_name(s.data_type)], shape=tuple(s.dims))
                for s in specs
            ]

        batching = config.max_batch_size > 0
        dynamic = config.dynamic_batching
        delay = dynamic.max_queue_delay_microseconds
        triton.bind(
            model_name=config.name or directory.name,
            model_version=version,
            infer_func=make_infer(session, [o.name for o in config.output]),
            inputs=tensors(config.input),
            outputs=tensors(config.output),
            config=ModelConfig(
                batching=batching,
                max_batch_size=max(int(config.max_batch_size), 1) if batching else 0,
                # the same config.pbtxt as aidx: its delay and preferred sizes
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=int(delay),
                    preferred_batch_size=[int(n) for n in dynamic.preferred_batch_size] or None,
                ),
            ),
            strict=True,
        )
        bound.append(directory.name)
    return bound


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="aidx's model repository")
    parser.add_argument("--model", action="append", help="serve only these (repeatable)")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument(
        "--access-token",
        help="require header `triton-access-token: TOKEN` on metadata, model config and "
        "inference too (Triton's restricted APIs; health stays open)",
    )
    parser.add_argument(
        "--exit-timeout", type=int, default=2, help="seconds Triton waits for clients at stop"
    )
    parser.add_argument("--workspace", type=Path, help="PyTriton's workspace (default: temp)")
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime intra-op threads (0: it decides)"
    )
    return parser.parse_args()


def triton_config(args: argparse.Namespace) -> Any:
    from pytriton.triton import TritonConfig

    return TritonConfig(
        http_address=args.address,
        http_port=args.http_port,
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        metrics_address=args.address,
        metrics_port=args.metrics_port,
        allow_metrics=True,
        log_verbose=0,
        # Clients' keep-alive connections would hold a stop for Triton's default 30 s.
        exit_timeout_secs=args.exit_timeout,
    )


def security_config(access_token: str | None) -> Any:
    """With a token: metadata, model config and inference restricted too."""
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, TritonSecurityConfig

    if not access_token:
        return None
    return TritonSecurityConfig(
        access_token=access_token,
        restricted_endpoints=[
            *DEFAULT_PROTECTED_ENDPOINTS,
            "metadata",
            "model-config",
            "inference",
        ],
    )


def main() -> None:
    args = parse_args()
    _ensure_libdir()
    logging.basicConfig(level=logging.INFO, format="pytriton-peer %(levelname)s %(message)s")
    for noisy in ("pytriton", "tritonclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from pytriton.triton import Triton

    config = triton_config(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    security = security_config(args.access_token)
    with Triton(config=config, workspace=args.workspace, security_config=security) as triton:
        bound = bind_all(triton, args.models, args.model, args.threads)
        if not bound:
            raise SystemExit(f"no model to serve in {args.models}")
        logging.info(
            "serving %s on http://%s:%d (gRPC %d)",
            ", ".join(bound),
            args.address,
            args.http_port,
            args.grpc_port,
        )
        triton.run()  # non-blocking: the server and the models' proxies run in threads
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise SystemExit("tritonserver exited")
    logging.info("stopped")


if __name__ == "__main__":
    main()
