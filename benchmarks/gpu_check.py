"""GPU check: for every model in the repository, CPU vs CUDA (and TensorRT fp16 when
this onnxruntime has it) outputs within stated tolerances, raw throughput at batch
1/8/32/128 per provider, and the batching gain through the service's batcher on the
GPU. One prepared script, a few minutes at most on a GPU machine.

    python benchmarks/gpu_check.py                 # prints tables, saves JSON
    python benchmarks/gpu_check.py --smoke         # seconds: proves it still runs

Without a CUDA device it says so and exits 0 (nothing to compare). Exit 1 when an
output is outside its tolerance.

Tolerances, on max|gpu - cpu| / max(max|cpu|, 1) per output (outputs are logits,
probabilities or maps of a few units, so this is close to an absolute error):
CUDA fp32 1e-3 (cuDNN may pick other algorithms and TF32 on Ampere and later);
TensorRT fp16 3e-2 (half precision, ~3 significant digits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from aidx.gpu.providers import (
    CPU,
    CUDA,
    TENSORRT,
    GpuOptions,
    cuda_device_count,
    select_providers,
    tensorrt_options,
)
from aidx.inference.dtypes import KSERVE_TO_NUMPY, config_to_kserve
from aidx.inference.repository import ModelEntry, model_config_pb2, scan
from aidx.inference.runtime import session_options

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {CUDA: 1e-3, TENSORRT: 3e-2}
BATCHES = (1, 8, 32, 128)


@dataclass
class Comparison:
    model: str
    provider: str
    output: str
    error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance


@dataclass
class Throughput:
    model: str
    provider: str
    batch: int
    items_per_s: float
    ms_per_batch: float


@dataclass
class ServiceGain:
    model: str
    provider: str
    single_rps: float  # one client at a time
    concurrent_rps: float  # `clients` at once, gathered by the batcher
    clients: int
    mean_batch: float
    gain: float


@dataclass
class Results:
    gpu: str
    onnxruntime: str
    providers: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    service: list[ServiceGain] = field(default_factory=list)


def sample_inputs(entry: ModelEntry, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in entry.config.input:
        dtype = KSERVE_TO_NUMPY[config_to_kserve(model_config_pb2.DataType.Name(spec.data_type))]
        dims = [d if d > 0 else 1 for d in spec.dims]
        shape = ([batch] if entry.max_batch_size > 0 else []) + dims
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            inputs[spec.name] = rng.integers(max(info.min, 0), min(info.max, 255) + 1, shape)
            inputs[spec.name] = inputs[spec.name].astype(dtype)
        else:
            inputs[spec.name] = rng.standard_normal(shape).astype(dtype)
    return inputs


def sessions(entry: ModelEntry, options: GpuOptions) -> dict[str, Any]:
    """CPU, CUDA and (when usable) TensorRT sessions of one model, with the service's
    own provider options. CUDA falling back to CPU is an error; TensorRT missing its
    libraries is reported and skipped."""
    path = str(entry.model_path)
    made = {CPU: ort.InferenceSession(path, session_options(), providers=[CPU])}
    cuda = select_providers("cuda", options.device_id, options)[-2:]  # CUDA, CPU
    made[CUDA] = ort.InferenceSession(path, session_options(), providers=cuda)
    if made[CUDA].get_providers()[0] != CUDA:
        raise RuntimeError(f"{entry.name}: CUDA fell back to {made[CUDA].get_providers()}")
    if TENSORRT in ort.get_available_providers() and entry.max_batch_size > 0:
        trt = tensorrt_options(options, options.device_id)
        for key, batch in (("min", 1), ("opt", 32), ("max", max(BATCHES))):
            trt[f"trt_profile_{key}_shapes"] = ",".join(
                f"{n}:{'x'.join(map(str, a.shape))}" for n, a in sample_inputs(entry, batch).items()
            )
        try:
            session = ort.InferenceSession(
                path, session_options(), providers=[(TENSORRT, trt), *cuda]
            )
        except Exception as exc:  # e.g. libnvinfer is not installed
            print(f"{entry.name}: TensorRT not usable: {exc}", file=sys.stderr)
        else:
            if session.get_providers()[0] == TENSORRT:
                made[TENSORRT] = session
            else:
                print(f"{entry.name}: TensorRT fell back; skipped", file=sys.stderr)
    return made


def compare(entry: ModelEntry, made: dict[str, Any]) -> list[Comparison]:
    feed = sample_inputs(entry, min(8, entry.max_batch_size or 1), seed=1)
    names = [o.name for o in entry.config.output]
    reference = dict(zip(names, made[CPU].run(names, feed), strict=True))
    out = []
    for provider, session in made.items():
        if provider == CPU:
            continue
        got = dict(zip(names, session.run(names, feed), strict=True))
        for name in names:
            ref = reference[name].astype(np.float64)
            scale = max(float(np.max(np.abs(ref))), 1.0)
            error = float(np.max(np.abs(got[name].astype(np.float64) - ref))) / scale
            out.append(Comparison(entry.name, provider, name, error, TOLERANCE[provider]))
    return out


def throughput(entry: ModelEntry, made: dict[str, Any], seconds: float) -> list[Throughput]:
    names = [o.name for o in entry.config.output]
    rows = []
    for provider, session in made.items():
        for batch in BATCHES if entry.max_batch_size > 0 else (1,):
            feed = sample_inputs(entry, batch)
            session.run(names, feed)  # warm (and build the TensorRT engine)
            runs, started = 0, time.perf_counter()
            while runs < 2 or time.perf_counter() - started < seconds:
                session.run(names, feed)
                runs += 1
            elapsed = time.perf_counter() - started
            rows.append(
                Throughput(
                    entry.name, provider, batch, runs * batch / elapsed, elapsed / runs * 1e3
                )
            )
    return rows


async def service_gain(
    root: Path, name: str, seconds: float, clients: int, device: str = "cuda"
) -> ServiceGain:
    """Requests of one item through the service's batcher on CUDA: one client, then
    `clients` at once (the batcher gathers them into batches)."""
    from aidx.inference.serving import ModelService
    from aidx.inference.settings import Settings

    settings = Settings(
        mode="development",  # type: ignore[arg-type]
        model_repository=root,
        enabled_models=[name],
        device=device,  # type: ignore[arg-type]
    )
    service = ModelService(settings)
    await service.start()
    served = service.get_ready(name)
    feed = sample_inputs(served.entry, 1)

    async def closed_loop(n: int) -> tuple[float, float]:
        done, sizes = 0, []
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                result = await service.infer(name, feed)
                sizes.append(result.batch_size)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(n)))
        return done / (time.perf_counter() - started), float(np.mean(sizes))

    try:
        await closed_loop(2)  # warm
        single, _ = await closed_loop(1)
        concurrent, mean_batch = await closed_loop(clients)
    finally:
        await service.stop()
    provider = served.runtime.provider if served.runtime else "?"
    return ServiceGain(name, provider, single, concurrent, clients, mean_batch, concurrent / single)


def print_tables(results: Results) -> None:
    print(f"\nGPU: {results.gpu}   onnxruntime {results.onnxruntime}   {results.providers}")
    print("\noutputs vs CPU (error = max|diff| / max(max|cpu|, 1))")
    print(f"{'model':16} {'provider':27} {'output':14} {'error':>10} {'tolerance':>10}  ok")
    for c in results.comparisons:
        print(
            f"{c.model:16} {c.provider:27} {c.output:14} {c.error:10.2e} {c.tolerance:10.0e}"
            f"  {'yes' if c.ok else 'NO'}"
        )
    print("\nraw throughput (items/s; ms per batch)")
    print(f"{'model':16} {'provider':27} " + " ".join(f"{'b=' + str(b):>16}" for b in BATCHES))
    keyed: dict[tuple[str, str], dict[int, Throughput]] = {}
    for t in results.throughput:
        keyed.setdefault((t.model, t.provider), {})[t.batch] = t
    for (model, provider), by_batch in keyed.items():
        cells = [
            f"{by_batch[b].items_per_s:8.0f} {by_batch[b].ms_per_batch:6.1f}ms"
            if b in by_batch
            else f"{'-':>16}"
            for b in BATCHES
        ]
        print(f"{model:16} {provider:27} " + " ".join(cells))
    print("\nbatching gain through the service (one-item requests, closed loop)")
    print(f"{'model':16} {'provider':27} {'1 client':>10} {'N clients':>10} {'N':>4} "
          f"{'batch':>6} {'gain':>6}")  # fmt: skip
    for s in results.service:
        print(
            f"{s.model:16} {s.provider:27} {s.single_rps:10.1f} {s.concurrent_rps:10.1f} "
            f"{s.clients:4d} {s.mean_batch:6.1f} {s.gain:6.2f}"
        )


def gpu_name() -> str:
    try:
        import torch

        return str(torch.cuda.get_device_name(0))
    except Exception:
        return f"{cuda_device_count()} CUDA device(s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--device-id", type=int, default=0)
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--smoke", action="store_true", help="a fraction of a second each")
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/gpu_check.json)")
    args = parser.parse_args(argv)
    seconds = 0.1 if args.smoke else args.seconds

    if CUDA not in ort.get_available_providers() or cuda_device_count() == 0:
        message = (
            "no CUDA device on this machine (or no CUDA provider in onnxruntime): "
            "nothing to compare; run this on a GPU machine"
        )
        print(message)
        if args.out is not None:  # never overwrite a GPU machine's saved results
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"status": "no_gpu", "message": message}, indent=2))
        return 0
    out = args.out or ROOT / "benchmarks/results/gpu_check.json"

    results = Results(gpu_name(), ort.__version__, ort.get_available_providers())
    with tempfile.TemporaryDirectory(prefix="aidx-trt-") as cache:
        options = GpuOptions(
            device_id=args.device_id,
            tensorrt=True,
            fp16=args.fp16,
            trt_engine_cache_dir=Path(cache),
        )
        for entry in scan(args.models):
            if entry.problem is not None:
                print(f"skipping {entry.name}: {entry.problem}", file=sys.stderr)
                continue
            made = sessions(entry, options)
            results.comparisons += compare(entry, made)
            results.throughput += throughput(entry, made, seconds)
            results.service.append(
                asyncio.run(service_gain(args.models, entry.name, seconds * 2, args.clients))
            )
    print_tables(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "status": "ok",
        "host": platform.node(),
        **asdict(results),
        "tolerances": TOLERANCE,
    }
    out.write_text(json.dumps(saved, indent=2))
    print(f"\nsaved {out}")
    return 0 if all(c.ok for c in results.comparisons) else 1


if __name__ == "__main__":
    sys.exit(main())
