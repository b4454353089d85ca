"""Whole-slide benchmark: raw OpenSlide tile reads at the target level, the tile
model alone at its best batch, and the whole pipeline (readers -> dynamic batcher ->
heatmap -> regions), with peak RSS, on synthetic slides of two sizes.

    python benchmarks/wsi.py                       # 20k x 20k and 60k x 60k px
    python benchmarks/wsi.py --sizes 8192 --smoke  # seconds; proves it still works

Slides are written into a temporary folder (pyramidal JPEG TIFF, 0.5 um/px, tiled
from a bank of rendered tiles) and deleted afterwards. Each pipeline run is its own
process, so its peak RSS (ru_maxrss) is its own. Prints one table and saves JSON
(benchmarks/results/wsi.json by default).

Readers and model threads: on a machine with few cores the stages share them, so by
default each stage gets half (`--readers` reader threads, `--threads` onnxruntime
threads), and the raw rates are measured with the same counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from aidx.inference.repository import load_entry
from aidx.inference.runtime import OnnxModel
from aidx.pipelines.wsi.phantom import make_layout, write_slide
from aidx.pipelines.wsi.slide import SlideReader, describe
from aidx.pipelines.wsi.tiling import TilePlan, plan_tiles, tissue_fractions, tissue_tiles
from aidx.pipelines.wsi.tissue import read_low_res

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = Path(os.environ.get("AIDX_MODEL_REPOSITORY", ROOT / "models"))
MODEL = "wsi_tiles"


def tissue_origins(path: Path, limit: int) -> tuple[list[tuple[int, int]], TilePlan, int]:
    info = describe(path)
    plan = plan_tiles(info, 0.5, 256)
    reader = SlideReader(info)
    try:
        low = read_low_res(reader, plan.stride_px / 4)
    finally:
        reader.close()
    cells = tissue_tiles(tissue_fractions(plan, low), 0.25)
    origins = []
    for row, col in cells:
        origins.append(plan.origin(row, col))
        if len(origins) >= limit:
            break
    return origins, plan, int((tissue_fractions(plan, low) >= 0.25).sum())


def raw_reads(path: Path, readers: int, limit: int) -> dict[str, float]:
    """Tiles/s for OpenSlide reads at the target level, `readers` threads, each with
    its own handle (as the pipeline reads them), on the slide's tissue tiles."""
    origins, plan, _ = tissue_origins(path, limit)
    reader = SlideReader(describe(path))
    chunks = [origins[i : i + 16] for i in range(0, len(origins), 16)]
    try:
        reader.read_tiles(origins[:4], plan.level, plan.read_px, plan.tile_px)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(readers) as pool:
            list(
                pool.map(
                    lambda c: reader.read_tiles(c, plan.level, plan.read_px, plan.tile_px),
                    chunks,
                )
            )
        seconds = time.perf_counter() - t0
    finally:
        reader.close()
    return {"tiles": len(origins), "tiles_per_s": len(origins) / seconds}


def model_alone(path: Path, threads: int, seconds: float) -> dict[str, float]:
    """Tiles/s of the tile model in onnxruntime (the service's session options), real
    tiles, batch sizes up to the model's max_batch_size: the best one wins."""
    entry = load_entry(REPOSITORY / MODEL)
    model = OnnxModel(entry, device="cpu", threads=threads)
    origins, plan, _ = tissue_origins(path, 64)
    reader = SlideReader(describe(path))
    try:
        tiles = reader.read_tiles(origins, plan.level, plan.read_px, plan.tile_px)
    finally:
        reader.close()
    rates = {}
    for batch in (1, 8, 16, 32, 64):
        if batch > entry.max_batch_size:
            break
        x = np.ascontiguousarray(np.resize(tiles, (batch, *tiles.shape[1:])))
        model.run({"tile": x})
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.run({"tile": x})
            n += batch
        rates[batch] = n / (time.perf_counter() - t0)
    best = max(rates, key=lambda b: rates[b])
    return {
        "best_batch": best,
        "tiles_per_s": rates[best],
        **{f"b{b}": r for b, r in rates.items()},
    }


def pipeline_child(path: Path, readers: int, threads: int) -> None:
    """Runs in its own process: the whole pipeline; prints JSON with peak RSS."""
    from aidx.inference.serving import ModelService
    from aidx.inference.settings import Settings
    from aidx.pipelines.wsi.analysis import AnalysisParams, analyze

    settings = Settings(
        mode="development",
        dev_api_key="benchmark-" + "x" * 24,
        model_repository=REPOSITORY,
        enabled_models=[MODEL],
        cpu_threads_per_instance=threads,
        device="cpu",
    )

    async def run() -> dict[str, float]:
        service = ModelService(settings)
        await service.start()
        rss_before = current_rss_mib()
        samples = [rss_before]
        stop = threading.Event()

        files = [current_rss_mib("RssFile")]

        def sample() -> None:  # the analysis's own high-water mark, every 20 ms
            while not stop.wait(0.02):
                samples.append(current_rss_mib())
                files.append(current_rss_mib("RssFile"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        quartiles: dict[str, float] = {}

        def progress(done: int, total: int) -> None:  # anon RSS along the slide
            for q in (25, 50, 75, 100):
                if total and f"q{q}" not in quartiles and done >= total * q / 100:
                    quartiles[f"q{q}"] = current_rss_mib()

        try:
            params = AnalysisParams(readers=readers)
            result = await analyze(service, describe(path), params, progress)
        finally:
            stop.set()
            sampler.join()
        await service.stop()
        tally = result.tally
        return {
            "tiles": tally.done,
            "stream_s": result.stream_s,
            "tiles_per_s": tally.done / result.stream_s if result.stream_s else 0.0,
            "tissue_s": result.tissue_s,
            "regions": len(result.regions),
            "mean_batch": tally.batch_tiles / tally.batches if tally.batches else 0.0,
            "rss_before_mib": rss_before,
            "analysis_peak_rss_mib": max(samples),
            "analysis_growth_mib": max(samples) - rss_before,
            "analysis_file_pages_growth_mib": max(files) - files[0],
            **{f"anon_rss_at_{k}_mib": v for k, v in quartiles.items()},
        }

    out = asyncio.run(run())
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its forking parent's size
    out["peak_rss_mib"] = current_rss_mib("VmHWM")
    print(json.dumps(out))


def current_rss_mib(kind: str = "RssAnon") -> float:
    """Resident memory now: RssAnon is the process's own (heap, arrays); RssFile is
    file pages mapped in, e.g. the slide that libtiff maps, which the kernel may
    drop at any time and which grows with the bytes read, not with what is held."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(kind + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def pipeline(path: Path, readers: int, threads: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(path)]
    command += ["--readers", str(readers), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = os.cpu_count() or 2
    parser.add_argument("--sizes", type=int, nargs="+", default=[20480, 61440])
    parser.add_argument("--readers", type=int, default=max(1, cores // 2))
    parser.add_argument("--threads", type=int, default=max(1, cores // 2))
    parser.add_argument("--read-tiles", type=int, default=3000)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "wsi.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        pipeline_child(args.child, args.readers, args.threads)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="aidx-wsi-bench-") as tmp:
        for size in args.sizes:
            size = size // 256 * 256
            path = Path(tmp) / f"slide_{size}.svs"
            t0 = time.perf_counter()
            layout = make_layout(size, size, size, n_suspicious=3, radius_fraction=(0.05, 0.08))
            write_slide(path, layout, source="bank")
            written_s = time.perf_counter() - t0
            _, _, tissue = tissue_origins(path, 1)
            reads = raw_reads(path, args.readers, 200 if args.smoke else args.read_tiles)
            model = model_alone(path, args.threads, 0.3 if args.smoke else 2.0)
            whole = pipeline(path, args.readers, args.threads)
            slower = min(reads["tiles_per_s"], model["tiles_per_s"])
            rows.append(
                {
                    "size_px": size,
                    "file_mib": path.stat().st_size / 2**20,
                    "write_s": written_s,
                    "tissue_tiles": tissue,
                    "read_tiles_per_s": reads["tiles_per_s"],
                    "model": model,
                    "pipeline": whole,
                    "pipeline_vs_slower": whole["tiles_per_s"] / slower,
                }
            )
            path.unlink()
    print_table(rows, args)
    if len(rows) >= 2:
        growth = rows[-1]["pipeline"]["peak_rss_mib"] / rows[0]["pipeline"]["peak_rss_mib"]
        print(f"peak RSS {rows[-1]['size_px']}^2 / {rows[0]['size_px']}^2: {growth:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "readers": args.readers}
    meta["threads"] = args.threads
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"saved {args.out}")
    return 0


def print_table(rows: list[dict], args: argparse.Namespace) -> None:  # type: ignore[type-arg]
    print(f"\nreaders={args.readers} onnxruntime threads={args.threads} cpus={os.cpu_count()}")
    header = (
        "| slide px | tissue tiles | raw reads tiles/s | model tiles/s (batch) | "
        "pipeline tiles/s | pipeline / slower | peak RSS MiB | "
        "anon RSS MiB at 25/50/75/100% of tiles |"
    )
    print(header)
    print("|" + "---|" * 8)
    for r in rows:
        m, p = r["model"], r["pipeline"]
        print(
            f"| {r['size_px']}^2 | {r['tissue_tiles']} | {r['read_tiles_per_s']:.0f} | "
            f"{m['tiles_per_s']:.0f} ({m['best_batch']}) | {p['tiles_per_s']:.0f} | "
            f"{r['pipeline_vs_slower']:.0%} | {p['peak_rss_mib']:.0f} | "
            + "/".join(f"{p.get(f'anon_rss_at_q{q}_mib', 0):.0f}" for q in (25, 50, 75, 100))
            + " |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
