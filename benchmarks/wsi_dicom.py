"""Pathology in the PACS, measured: one synthetic slide as a tiled SVS and as DICOM WSI
(wsidicomizer) stored in a real Orthanc, pulled over DICOMweb as aidx pulls it
(integrations/dicom/wsi_pull.py: WADO-RS metadata, then every instance streamed to
disk), then read and analysed by the same code: raw OpenSlide tile reads at the target
level and the whole pipeline (benchmarks/wsi.py's, in its own process).

    unshare -n bash -c 'ip link set lo up; python benchmarks/wsi_dicom.py'
    unshare -n bash -c 'ip link set lo up; python benchmarks/wsi_dicom.py --smoke'

Needs `make peers` (Orthanc with DICOMweb, wsidicomizer's venv). Run it in a private
network namespace: Orthanc listens on 127.0.0.1 only, on free ports. Prints one table
and saves JSON (benchmarks/results/wsi_dicom.json by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from wsi import pipeline, raw_reads, tissue_origins  # type: ignore[import-not-found]  # noqa: E402

from aidx.inference.settings_sections import PacsSettings  # noqa: E402
from aidx.integrations.dicom.wsi_pull import WsiPuller  # noqa: E402
from aidx.pipelines.wsi.phantom import make_layout, write_slide  # noqa: E402
from tests.peers import OrthancPeer, wsidicomizer  # noqa: E402


def store(orthanc: OrthancPeer, instances: list[Path]) -> float:
    t0 = time.perf_counter()
    for path in instances:
        httpx.post(f"{orthanc.url}/instances", content=path.read_bytes(), timeout=600)
    return time.perf_counter() - t0


def pulls(orthanc: OrthancPeer, level0: pydicom.Dataset, into: Path, times: int) -> list[dict]:  # type: ignore[type-arg]
    puller = WsiPuller(
        PacsSettings(dicomweb_url=orthanc.dicomweb), max_bytes=64 * 2**30, max_instances=256
    )
    out = []
    for i in range(times):
        pulled = asyncio.run(
            puller.pull(level0.StudyInstanceUID, level0.SeriesInstanceUID, into / f"pull{i}")
        )
        out.append(
            {"level0": str(pulled.level0), "instances": pulled.instances,
             "bytes": pulled.bytes_pulled, "pull_s": pulled.pull_s}
        )  # fmt: skip
    return out


def measure(path: Path, args: argparse.Namespace) -> dict[str, object]:
    _, _, tissue = tissue_origins(path, 1)
    reads = raw_reads(path, args.readers, 200 if args.smoke else args.read_tiles)
    whole = pipeline(path, args.readers, args.threads)
    return {"tissue_tiles": tissue, "read_tiles_per_s": reads["tiles_per_s"], "pipeline": whole}


def run(args: argparse.Namespace, tmp: Path) -> list[dict]:  # type: ignore[type-arg]
    size = args.size // 256 * 256
    svs = tmp / f"slide_{size}.svs"
    layout = make_layout(size, size, size, n_suspicious=3, radius_fraction=(0.05, 0.08))
    write_slide(svs, layout, source="bank")
    t0 = time.perf_counter()
    levels = max(1, (size // 512).bit_length())  # down to 512 px, as the SVS's pyramid
    instances = wsidicomizer.dicomize(svs, tmp / "dicom", levels)
    dicomize_s = time.perf_counter() - t0
    level0 = pydicom.dcmread(instances[0], stop_before_pixels=True)
    orthanc = OrthancPeer(tmp / "orthanc").start()
    try:
        store_s = store(orthanc, instances)
        pulled = pulls(orthanc, level0, tmp / "pulled", 1 if args.smoke else args.pulls)
    finally:
        orthanc.stop()
    pull_s = statistics.median(p["pull_s"] for p in pulled)
    size_mib = pulled[0]["bytes"] / 2**20
    tiff = {"source": "SVS (tiled TIFF) on disk", "file_mib": svs.stat().st_size / 2**20,
            "instances": 1, **measure(svs, args)}  # fmt: skip
    dicom = {
        "source": "DICOM WSI pulled from Orthanc", "file_mib": size_mib,
        "instances": pulled[0]["instances"], "pull_s": pull_s, "pull_mib_per_s": size_mib / pull_s,
        "pull_s_all": [p["pull_s"] for p in pulled], "dicomize_s": dicomize_s,
        "store_s": store_s, **measure(Path(pulled[0]["level0"]), args),
    }  # fmt: skip
    return [{"size_px": size, **tiff}, {"size_px": size, **dicom}]


def print_table(rows: list[dict], args: argparse.Namespace) -> None:  # type: ignore[type-arg]
    print(f"\nreaders={args.readers} onnxruntime threads={args.threads} cpus={os.cpu_count()}")
    print(
        "| slide | source | MiB | instances | pull s (MiB/s) | raw reads tiles/s | "
        "pipeline tiles/s | pipeline s | pull + pipeline s | regions |"
    )
    print("|" + "---|" * 10)
    for r in rows:
        p = r["pipeline"]
        pull = f"{r['pull_s']:.2f} ({r['pull_mib_per_s']:.0f})" if "pull_s" in r else "-"
        seconds = p["tissue_s"] + p["stream_s"]
        total = seconds + r.get("pull_s", 0.0)
        print(
            f"| {r['size_px']}^2 | {r['source']} | {r['file_mib']:.1f} | {r['instances']} | "
            f"{pull} | {r['read_tiles_per_s']:.0f} | {p['tiles_per_s']:.0f} | {seconds:.1f} | "
            f"{total:.1f} | {p['regions']} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = os.cpu_count() or 2
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--pulls", type=int, default=3)
    parser.add_argument("--readers", type=int, default=max(1, cores // 2))
    parser.add_argument("--threads", type=int, default=max(1, cores // 2))
    parser.add_argument("--read-tiles", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "wsi_dicom.json"
    )
    args = parser.parse_args()
    if args.smoke:
        args.size = min(args.size, 4096)
    missing = wsidicomizer.missing()
    if missing:
        print(f"wsidicomizer is not installed: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="aidx-wsi-dicom-bench-") as tmp:
        rows = run(args, Path(tmp))
    print_table(rows, args)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "readers": args.readers,
            "threads": args.threads, "smoke": args.smoke}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
