"""The review worklist with 10,000 reports: server time of GET /v1/reports pages.

    python benchmarks/worklist.py                 # 10,000 CXR reports, 50 requests a row
    python benchmarks/worklist.py --reports 500 --requests 5 --smoke

The index (report_index, SQLite in var/) is filled directly with 10,000 rows shaped as
ReportIndex.put writes them (a tenth STAT, a third with a finding present, a fifth
reviewed), then the app answers in-process (no network: the time is the server's,
the ASGI stack included). Rows: the first page, a page 100 pages deep (by cursor), the
unreviewed filter, a model and date filter. Done-when (issue 15): first page < 300 ms.
Prints one table and saves JSON (benchmarks/results/worklist.json by default).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from aidx.inference.schema import report_index
from aidx.inference.settings import Settings
from aidx.service.app import create_app

KEY = "bench-worklist-key-0123456789abcdef"
RESULTS = Path(__file__).resolve().parent / "results" / "worklist.json"


def _rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = time.time()
    rows = []
    for i in range(n):
        stat, positive = rng.random() < 0.1, rng.random() < 0.33
        rows.append({
            "id": f"00000000-0000-4000-8000-{i:012d}", "pipeline": "cxr",
            "urgency": 2 if stat else int(positive), "stat": stat, "positive": positive,
            "assessed": rng.random() > 0.05,
            "review": "unreviewed" if rng.random() > 0.2 else "agreed",
            "model_name": "cxr_pneumonia", "model_version": 1, "patient_id": f"P{i % 3000:06d}",
            "created_at_s": now - rng.uniform(0, 90 * 86400),
        })  # fmt: skip
    return rows


def _timed(client: TestClient, params: dict[str, Any], requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY}"}
    times_ms = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get("/v1/reports", params=params, headers=headers)
        times_ms.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text
    items = len(answer.json()["items"])
    times_ms.sort()
    return {
        "items": items,
        "p50_ms": round(statistics.median(times_ms), 2),
        "p95_ms": round(times_ms[max(0, round(0.95 * len(times_ms)) - 1)], 2),
        "max_ms": round(times_ms[-1], 2),
    }


def _deep_cursor(client: TestClient, pages: int) -> str:
    headers = {"Authorization": f"Bearer {KEY}"}
    cursor = None
    for _ in range(pages):
        params = {"kind": "cxr", **({"cursor": cursor} if cursor else {})}
        cursor = client.get("/v1/reports", params=params, headers=headers).json()["next_cursor"]
    assert cursor, "fewer pages than asked for"
    return str(cursor)


def run(reports: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            mode="development", dev_api_key=KEY, var_dir=Path(tmp), writeback=False,
            enabled_models=["cxr_pneumonia"], warmup=False,
        )  # type: ignore[call-arg]  # fmt: skip
        with TestClient(create_app(settings)) as client:
            db = client.app.state.services.db  # type: ignore[attr-defined]
            with db.begin() as conn:
                conn.execute(report_index.insert(), _rows(reports))
            since = datetime.fromtimestamp(time.time() - 30 * 86400, UTC).date().isoformat()
            deep = min(100, reports // 50 - 1)
            cases = {
                "first page": {"kind": "cxr"},
                f"page {deep + 1} (cursor)": {"kind": "cxr", "cursor": _deep_cursor(client, deep)},
                "unreviewed, first page": {"kind": "cxr", "review": "unreviewed"},
                "model + last 30 days": {"kind": "cxr", "model": "cxr_pneumonia",
                                         "date_from": since},
            }  # fmt: skip
            rows = [{"case": name, **_timed(client, params, requests)}
                    for name, params in cases.items()]  # fmt: skip
    return {
        "reports": reports, "requests_per_case": requests, "store": "SQLite",
        "machine": platform.platform(), "at": datetime.now(UTC).isoformat(), "rows": rows,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="do not save the JSON")
    args = parser.parse_args()
    result = run(args.reports, args.requests)
    print(f"worklist with {result['reports']} reports ({result['store']}), "
          f"{result['requests_per_case']} requests per row")  # fmt: skip
    print(f"{'case':<28} {'items':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for row in result["rows"]:
        print(f"{row['case']:<28} {row['items']:>5} {row['p50_ms']:>8} {row['p95_ms']:>8} "
              f"{row['max_ms']:>8}")  # fmt: skip
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
