"""The batcher with and without its knee cap, in-process (no HTTP), on DenseNet-121.

    python benchmarks/batch_knee.py                      # exports DenseNet-121 first
    python benchmarks/batch_knee.py --model path/to/model.onnx --seconds 10 --rounds 3
    python benchmarks/batch_knee.py --smoke --out x.json   # seconds, on the demo model

C closed-loop clients (default 32) each send one 1x1x224x224 image through a
DynamicBatcher with xrv_densenet's config (max_batch_size 32, 20 ms delay) over one
onnxruntime session as aidx makes it (runtime.session_options). Each round runs
Triton's rule (cut_at_knee=False: batches fill the maximum) and then the knee cap, one
after the other, so both see the same load; each starts with a ramp (3 rounds of 1,
4, 8, 16 and C requests at once) as a service's load grows. Reported per run: items/s, process CPU
per item (core-ms, less sensitive to the machine's other load than items/s), mean
batch, the share of the time the model computed, and the knee with its measured curve.
Prints a table and saves JSON (benchmarks/results/batch_knee.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from aidx.inference.batcher import BatcherConfig, DynamicBatcher
from aidx.inference.runtime import session_options

ROOT = Path(__file__).resolve().parents[1]


def export(folder: str) -> Path:
    command = [sys.executable, "-m", "aidx.service", "models", "export-xrv"]
    subprocess.run([*command, "--repository", folder, "--name", "xrv"], check=True, cwd=ROOT)
    return Path(folder) / "xrv" / "1" / "model.onnx"


async def closed_loop(
    session: ort.InferenceSession, knee: bool, clients: int, seconds: float
) -> dict[str, object]:
    names = [o.name for o in session.get_outputs()]
    sizes: list[int] = []
    computing = [0.0]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = dict(zip(names, session.run(names, inputs), strict=True))
        computing[0] += time.perf_counter() - t0
        sizes.append(len(inputs["image"]))
        return out

    config = BatcherConfig(max_batch_size=32, max_queue_delay_us=20_000, cut_at_knee=knee)
    batcher = DynamicBatcher("xrv", run, config)
    batcher.start()
    image = {"image": np.random.default_rng(1).random((1, 1, 224, 224), np.float32)}
    for ramp in (1, 4, 8, 16, clients):  # a load that grows: the curve gets measured
        for _ in range(3):
            await asyncio.gather(*(batcher.infer(image) for _ in range(ramp)))
    sizes.clear()
    computing[0] = 0.0
    done = [0]
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            await batcher.infer(image)
            done[0] += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    cpu, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
    curve = batcher.knee.curve() if batcher.knee else {}
    cap = batcher.knee.knee() if batcher.knee else None
    await batcher.stop()
    return {
        "cut_at_knee": knee,
        "items": done[0],
        "items_per_s": done[0] / elapsed,
        "cpu_ms_per_item": cpu / max(done[0], 1) * 1e3,
        "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
        "model_busy": computing[0] / elapsed,
        "knee": cap,
        "curve_ms_per_item": {str(k): round(v * 1e3, 2) for k, v in curve.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="an ONNX file (default: export DenseNet-121)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/batch_knee.json")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to prove it runs")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds, args.clients = 0.3, 1, 4
        args.model = args.model or ROOT / "models" / "cxr_pneumonia" / "2" / "model.onnx"
    with tempfile.TemporaryDirectory() as folder:
        path = args.model or export(folder)
        session = ort.InferenceSession(
            str(path), session_options(0), providers=["CPUExecutionProvider"]
        )
        runs = [
            asyncio.run(closed_loop(session, knee, args.clients, args.seconds))
            for _ in range(args.rounds)
            for knee in (False, True)
        ]
    print(f"\n{'cut at knee':>11} {'items':>6} {'items/s':>8} {'cpu ms/item':>12} "
          f"{'batch':>6} {'busy':>5} {'knee':>5}  curve (ms/item by group)")  # fmt: skip
    for r in runs:
        print(
            f"{r['cut_at_knee']!s:>11} {r['items']:>6} {r['items_per_s']:>8.1f} "
            f"{r['cpu_ms_per_item']:>12.1f} {r['mean_batch']:>6.1f} {r['model_busy']:>5.2f} "
            f"{r['knee']!s:>5}  {r['curve_ms_per_item']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "clients": args.clients,
                "seconds_per_run": args.seconds,
                "machine": {
                    "cpu_count": len(os.sched_getaffinity(0)),
                    "onnxruntime": ort.__version__,
                },
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
