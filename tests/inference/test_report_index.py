"""The worklist's report index at 10,000 reports: the order (STAT, then a finding
present, then newest), keyset pages that cover every report once, the filters, and a
plan that walks an index from the cursor instead of sorting the table (bounded work
per page, whatever the number of reports: checked by the plan, not by a clock)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from aidx.inference.errors import BadRequest
from aidx.inference.report_index import (
    ReportIndex,
    ReviewFilter,
    WorklistQuery,
    page_query,
    review_state,
)
from aidx.inference.reports import Coding, Finding, ModelRef, Report, SourceRef, Timings
from aidx.inference.schema import report_index
from aidx.inference.store import create_store, init_store

N = 10_000
DAY0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    engine = create_store(f"sqlite:///{tmp_path_factory.mktemp('index') / 'aidx.db'}")
    init_store(engine)
    rng = random.Random(7)
    rows = []
    for i in range(N):
        stat, positive = rng.random() < 0.02, rng.random() < 0.2
        rows.append({
            "id": f"{i:08d}-0000-4000-8000-000000000000", "pipeline": ("cxr", "ct")[i % 2],
            "urgency": 2 if stat else int(positive), "stat": stat, "positive": positive,
            "assessed": rng.random() > 0.1,
            "review": rng.choice(["unreviewed", "agreed", "disagreed", "unsure"]),
            "model_name": rng.choice(["cxr_pneumonia", "xrv_densenet"]), "model_version": 1,
            "patient_id": f"P{i}", "created_at_s": DAY0.timestamp() + i * 60.0,
        })  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(report_index), rows)
    return engine


def _all_pages(index: ReportIndex, query: WorklistQuery) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []
    while True:
        page = index.page(query)
        seen += [item.model_dump() for item in page.items]
        if page.next_cursor is None:
            return seen
        query = query.model_copy(update={"cursor": page.next_cursor})


def _key(item: dict[str, object]) -> tuple[int, datetime, str]:
    urgency = 2 if item["stat"] else int(bool(item["positive"]))
    return urgency, item["created_at"], str(item["id"])  # type: ignore[return-value]


def test_pages_cover_every_report_once_stat_and_positive_first_then_newest(
    engine: Engine,
) -> None:
    index = ReportIndex(engine)
    items = _all_pages(index, WorklistQuery(pipeline="cxr", limit=200))
    assert len(items) == N // 2 == len({i["id"] for i in items})
    assert [_key(i) for i in items] == sorted((_key(i) for i in items), reverse=True)
    assert items[0]["stat"] and not items[-1]["stat"] and not items[-1]["positive"]


def test_filters_by_review_not_assessed_model_and_date(engine: Engine) -> None:
    index = ReportIndex(engine)
    day = (DAY0 + timedelta(days=2)).date()
    query = WorklistQuery(
        pipeline="ct", review=ReviewFilter.disagreed, model="xrv_densenet", date_from=day,
        date_to=day, limit=7,
    )  # fmt: skip
    items = _all_pages(index, query)
    assert items and all(
        i["review"] == "disagreed" and i["model_name"] == "xrv_densenet"
        and i["created_at"].date() == day  # type: ignore[attr-defined]
        for i in items
    )  # fmt: skip
    not_assessed = _all_pages(index, WorklistQuery(pipeline="cxr", review="not_assessed"))
    assert not_assessed and not any(i["assessed"] for i in not_assessed)
    assert index.page(WorklistQuery(pipeline="wsi")).items == []


@pytest.mark.parametrize("review", [None, ReviewFilter.unreviewed, ReviewFilter.not_assessed])
def test_a_page_walks_an_index_from_its_cursor_and_never_sorts_the_table(
    engine: Engine, review: ReviewFilter | None
) -> None:
    first = ReportIndex(engine).page(WorklistQuery(pipeline="cxr", review=review))
    query = WorklistQuery(pipeline="cxr", review=review, cursor=first.next_cursor)
    sql = page_query(query).compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        plan = " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    assert "USING INDEX ix_report_index_" in plan, plan
    assert "TEMP B-TREE" not in plan and "SCAN report_index" not in plan, plan


def _vm_steps(engine: Engine, sql: str) -> int:
    """SQLite's virtual-machine instructions to run `sql` to its end, in hundreds: a
    deterministic measure of the work done (rows visited), unlike a clock."""
    raw = engine.raw_connection()
    try:
        steps = [0]

        def tick() -> int:
            steps[0] += 1
            return 0

        raw.driver_connection.set_progress_handler(tick, 100)  # type: ignore[union-attr]
        raw.cursor().execute(sql).fetchall()
        return steps[0]
    finally:
        raw.close()


def test_a_later_page_costs_a_page_not_the_table(engine: Engine) -> None:
    index = ReportIndex(engine)
    cursor = index.page(WorklistQuery(pipeline="cxr", limit=50)).next_cursor
    for _ in range(40):  # deep into the list: page 41 of 100
        cursor = index.page(WorklistQuery(pipeline="cxr", limit=50, cursor=cursor)).next_cursor
    query = WorklistQuery(pipeline="cxr", limit=50, cursor=cursor)
    sql = str(page_query(query).compile(engine, compile_kwargs={"literal_binds": True}))
    whole = "SELECT * FROM report_index WHERE pipeline = 'cxr' ORDER BY patient_id"
    page_steps, whole_steps = _vm_steps(engine, sql), _vm_steps(engine, whole)
    assert page_steps * 20 < whole_steps, (page_steps, whole_steps)


def test_a_saved_report_is_indexed_and_keeps_its_review_and_stat(tmp_path: Path) -> None:
    engine = create_store(f"sqlite:///{tmp_path / 'aidx.db'}")
    init_store(engine)
    index = ReportIndex(engine)
    finding = Finding(concept=Coding(scheme="SCT", code="1", meaning="Pneumonia"),
                      probability=0.9, threshold=0.5, present=True)  # fmt: skip
    report = Report(
        id="6f1c2a44-4b0e-4d53-9a43-8f3b1e7d2c11", pipeline="cxr", source=SourceRef(),
        model=ModelRef(name="cxr_pneumonia", version=1, sha256=None, demo_weights=True),
        findings=[finding], timings=Timings(),
    )  # fmt: skip
    index.put(report, priority=1)
    index.set_review(report.id, ["agree", "not_sure"])
    index.put(report, priority=None)  # saved again (its timings): still STAT, still agreed
    (item,) = index.page(WorklistQuery(pipeline="cxr")).items
    assert (item.stat, item.positive, item.assessed, item.review) == (True, True, True, "agreed")


def test_review_state_and_cursor_refusals() -> None:
    assert review_state([]) == "unreviewed"
    assert review_state(["not_sure"]) == "unsure"
    assert review_state(["agree", "not_sure"]) == "agreed"
    assert review_state(["agree", "disagree"]) == "disagreed"
    with pytest.raises(BadRequest) as caught:
        page_query(WorklistQuery(pipeline="cxr", cursor="not-a-cursor"))
    assert caught.value.code == "invalid_cursor"
