"""CXR decode benchmark: the 7 MB 15-bit CR (pydicom-data RG1_UNCR.dcm, 1955 x 1841,
MONOCHROME1, window 15000/30000) decoded and windowed as `/v1/cxr` does it
(`decode_radiograph`: parse, checks, pixels, display chain, stored spread, what the
workspace viewer's full-resolution image needs), and the display chain alone
(`to_display`), many times in one process. Two more rows follow the viewer's image
past the decode: what the analysis saves for it (`save_full_image`, in the request's
postprocessing; with each file's fsync) and, where the code makes the viewer's image
on its first GET (issue 16), that first GET (`full_image_file`; off the request path).

    python benchmarks/cxr_decode.py                   # this checkout
    python benchmarks/cxr_decode.py --baseline main   # before (main) and after
    python benchmarks/cxr_decode.py --smoke           # a few repeats

Each step reports wall-clock ms (min, p50, p90) and the process's CPU ms per call
(time.process_time; on a shared machine the CPU ms is the figure that counts). Each
measurement runs in its own process (with --baseline, first on that revision's code:
benchmarks/baseline.py). The sha256 of the display image and of the viewer's pixels
are printed for each, so before and after can be seen to give the same pixels. Saves
JSON (benchmarks/results/cxr_decode.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from baseline import checkout, environment  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
FILE = "RG1_UNCR.dcm"


def _times_ms(work, repeats: int, untimed=None) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    """Wall and CPU ms of each call of `work` (`untimed` runs before each, unmeasured)."""
    out: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(repeats):
        if untimed is not None:
            untimed()
        t0, c0 = time.perf_counter(), time.process_time()
        work()
        out["cpu"].append((time.process_time() - c0) * 1e3)
        out["wall"].append((time.perf_counter() - t0) * 1e3)
    return out


def _viewer_rows(radiograph, repeats: int) -> tuple[dict, str]:  # type: ignore[no-untyped-def, type-arg]
    """The viewer's image past the decode: saved at analysis, made at its first GET
    (where the code defers it), and the sha256 of the pixels the viewer is served."""
    from aidx.inference.reports import ReportStore
    from aidx.pipelines.cxr import full_image as module

    made = getattr(module, "full_image_file", None)  # None: saved ready-made (before)
    with tempfile.TemporaryDirectory(prefix="aidx-cxr-bench-store-") as folder:
        store, rid = ReportStore(Path(folder)), str(uuid.uuid4())

        def fresh() -> None:
            shutil.rmtree(Path(folder) / rid, ignore_errors=True)

        def saved() -> None:
            fresh()
            module.save_full_image(store, rid, radiograph.full)

        rows = {"save_full_image": _times_ms(saved, repeats, fresh)}
        if made is not None:
            rows["viewer_first_get"] = _times_ms(
                lambda: made(store, rid, module.FULL_PIXELS_FILE), repeats, saved
            )
        pixels = store.file(rid, module.FULL_PIXELS_FILE).read_bytes()
    return rows, hashlib.sha256(pixels).hexdigest()


def child(repeats: int) -> dict:  # type: ignore[type-arg]
    from pydicom.data import get_testdata_file

    from aidx.inference.dicom_input import decode_pixels, read_image
    from aidx.pipelines.cxr.decode import decode_radiograph, to_display

    data = Path(get_testdata_file(FILE)).read_bytes()
    radiograph = decode_radiograph(data)  # warm-up, and the pixels to compare
    image = radiograph.image01
    ds = read_image(data)
    stored = decode_pixels(ds)
    rows = {
        "decode_radiograph": _times_ms(lambda: decode_radiograph(data), repeats),
        "to_display": _times_ms(lambda: to_display(ds, stored), repeats),
    }
    viewer_rows, viewer_sha256 = _viewer_rows(radiograph, repeats)
    return {
        "file_mb": round(len(data) / 2**20, 2),
        "shape": list(image.shape),
        "sha256": hashlib.sha256(image.tobytes()).hexdigest(),
        "viewer_sha256": viewer_sha256,
        "cpu_s": round(time.process_time(), 2),
        "ms": {name: summary(times) for name, times in {**rows, **viewer_rows}.items()},
    }


def summary(times: dict[str, list[float]]) -> dict[str, float]:
    wall, cpu = times["wall"], times["cpu"]
    return {
        "min": round(min(wall), 2),
        "p50": round(float(np.median(wall)), 2),
        "p90": round(float(np.percentile(wall, 90)), 2),
        "cpu_ms_mean": round(float(np.mean(cpu)), 2),
        "cpu_ms_p50": round(float(np.median(cpu)), 2),
        "n": len(wall),
    }


def measure(repeats: int, code: Path | None) -> dict:  # type: ignore[type-arg]
    command = [sys.executable, __file__, "--child", "--repeats", str(repeats)]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, env=environment(code)
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="3 repeats")
    parser.add_argument("--baseline", metavar="REF", help="also measure this git revision")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    default_out = ROOT / "benchmarks" / "results" / "cxr_decode.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    repeats = 3 if args.smoke else args.repeats
    if args.child:
        print(json.dumps(child(repeats)))
        return 0
    results = {}
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="aidx-cxr-bench-") as tmp:
            results["before"] = measure(repeats, checkout(args.baseline, Path(tmp)))
    results["after"] = measure(repeats, None)
    meta = {
        "file": FILE,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "baseline": args.baseline,
    }
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **results}, indent=2))
    print(f"\nsaved {args.out}")
    return 0


def print_table(results: dict) -> None:  # type: ignore[type-arg]
    first = next(iter(results.values()))
    print(f"{FILE}: {first['file_mb']} MB, {first['shape'][0]} x {first['shape'][1]}")
    print("| code | step | min ms | p50 ms | p90 ms | CPU ms/call (mean) | CPU ms p50 | n "
          "| display sha256 | viewer sha256 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, result in results.items():
        for step, ms in result["ms"].items():
            print(f"| {label} | {step} | {ms['min']} | {ms['p50']} | {ms['p90']} | "
                  f"{ms['cpu_ms_mean']} | {ms['cpu_ms_p50']} | {ms['n']} | "
                  f"{result['sha256'][:12]} | {result['viewer_sha256'][:12]} |")  # fmt: skip
    if {"before", "after"} <= results.keys():
        before, after = results["before"], results["after"]
        print(f"\nsame display pixels before and after: {before['sha256'] == after['sha256']}")
        same = before["viewer_sha256"] == after["viewer_sha256"]
        print(f"same viewer pixels before and after: {same}")


if __name__ == "__main__":
    raise SystemExit(main())
