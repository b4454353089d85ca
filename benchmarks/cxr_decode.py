"""CXR decode benchmark: the 7 MB 15-bit CR (pydicom-data RG1_UNCR.dcm, 1955 x 1841,
MONOCHROME1, window 15000/30000) decoded and windowed as `/v1/cxr` does it
(`decode_radiograph`: parse, checks, pixels, display chain, stored spread), and the
display chain alone (`to_display`), many times in one process.

    python benchmarks/cxr_decode.py                   # this checkout
    python benchmarks/cxr_decode.py --baseline main   # before (main) and after
    python benchmarks/cxr_decode.py --smoke           # a few repeats

Each measurement runs in its own process (with --baseline, first on that revision's
code: benchmarks/baseline.py). The output image's sha256 is printed for each, so
before and after can be seen to give the same pixels. Saves JSON
(benchmarks/results/cxr_decode.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from baseline import checkout, environment  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
FILE = "RG1_UNCR.dcm"


def _times_ms(work, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def child(repeats: int) -> dict:  # type: ignore[type-arg]
    from pydicom.data import get_testdata_file

    from aidx.inference.dicom_input import decode_pixels, read_image
    from aidx.pipelines.cxr.decode import decode_radiograph, to_display

    data = Path(get_testdata_file(FILE)).read_bytes()
    image = decode_radiograph(data).image01  # warm-up, and the pixels to compare
    ds = read_image(data)
    stored = decode_pixels(ds)
    rows = {
        "decode_radiograph": _times_ms(lambda: decode_radiograph(data), repeats),
        "to_display": _times_ms(lambda: to_display(ds, stored), repeats),
    }
    return {
        "file_mb": round(len(data) / 2**20, 2),
        "shape": list(image.shape),
        "sha256": hashlib.sha256(image.tobytes()).hexdigest(),
        "cpu_s": round(time.process_time(), 2),
        "ms": {name: summary(times) for name, times in rows.items()},
    }


def summary(times: list[float]) -> dict[str, float]:
    return {
        "min": round(min(times), 2),
        "p50": round(float(np.median(times)), 2),
        "p90": round(float(np.percentile(times, 90)), 2),
        "n": len(times),
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
    print("| code | step | min ms | p50 ms | p90 ms | n | image sha256 |")
    print("|---|---|---|---|---|---|---|")
    for label, result in results.items():
        for step, ms in result["ms"].items():
            print(f"| {label} | {step} | {ms['min']} | {ms['p50']} | {ms['p90']} | {ms['n']} | "
                  f"{result['sha256'][:12]} |")  # fmt: skip
    if {"before", "after"} <= results.keys():
        same = results["before"]["sha256"] == results["after"]["sha256"]
        print(f"\nsame pixels before and after: {same}")


if __name__ == "__main__":
    raise SystemExit(main())
