"""The report index: one row per report, so that the review worklist can list a kind's
reports urgent first (STAT, then a finding present), then newest, filtered by review
state, model and date, and page through ten thousand of them at the cost of one page.

Paging is by keyset, never by offset: a page's last row (urgency, created_at_s, id) is
the next page's cursor, and the query walks the index `ix_report_index_page` (or, with
a review filter, `ix_report_index_review`) from there, reading about `limit` rows.
Reports themselves stay on disk (ReportStore); the index is rebuilt from them when empty.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine, Select, false, func, select, tuple_, update

from aidx.inference.errors import BadRequest
from aidx.inference.reports import Report
from aidx.inference.schema import report_index

STAT_PRIORITY = 1  # X-Aidx-Priority: stat (the batcher's most urgent class)
MAX_PAGE = 200


class Review(enum.StrEnum):
    unreviewed = "unreviewed"
    agreed = "agreed"
    disagreed = "disagreed"
    unsure = "unsure"  # only "not sure" answers so far


class ReviewFilter(enum.StrEnum):
    unreviewed = "unreviewed"
    agreed = "agreed"
    disagreed = "disagreed"
    unsure = "unsure"
    not_assessed = "not_assessed"  # a finding the model could not assess


def review_state(verdicts: Iterable[str]) -> Review:
    """A report's review state from its readers' current verdicts: any disagreement
    wins, then any agreement."""
    seen = set(verdicts)
    if "disagree" in seen:
        return Review.disagreed
    if "agree" in seen:
        return Review.agreed
    return Review.unsure if seen else Review.unreviewed


class WorklistItem(BaseModel):
    id: str
    pipeline: str
    stat: bool
    positive: bool = Field(description="the model found a finding present")
    assessed: bool = Field(description="False: a finding was not assessed")
    review: Review
    model_name: str
    model_version: int
    patient_id: str | None
    created_at: datetime


class WorklistPage(BaseModel):
    items: list[WorklistItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class WorklistQuery(BaseModel):
    pipeline: str
    review: ReviewFilter | None = None
    model: str | None = None
    date_from: date | None = None  # UTC days, inclusive
    date_to: date | None = None
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)


def _row(report: Report, priority: int | None) -> dict[str, Any]:
    stat = priority is not None and priority <= STAT_PRIORITY
    positive = any(f.present for f in report.findings)
    return {
        "id": report.id,
        "pipeline": report.pipeline,
        "urgency": 2 if stat else int(positive),
        "stat": stat,
        "positive": positive,
        "assessed": report.not_assessed is None and all(f.assessed for f in report.findings),
        "model_name": report.model.name,
        "model_version": report.model.version,
        "patient_id": report.source.patient_id,
        "created_at_s": report.created_at.timestamp(),
    }


def encode_cursor(urgency: int, created_at_s: float, rid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([urgency, created_at_s, rid]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, float, str]:
    try:
        urgency, created_at_s, rid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        decoded = int(urgency), float(created_at_s), str(rid)
    except (ValueError, TypeError):
        decoded = (-1, 0.0, "")
    if decoded[0] not in (0, 1, 2) or not math.isfinite(decoded[1]) or len(decoded[2]) > 36:
        raise BadRequest("the cursor is not one this server gave", code="invalid_cursor")
    return decoded


def _day_start_s(day: date) -> float:
    return datetime.combine(day, time.min, UTC).timestamp()


def page_query(query: WorklistQuery) -> Select[Any]:
    """The SELECT of one page (`limit` + 1 rows: the extra one says whether more follow)."""
    t = report_index
    stmt = select(t).where(t.c.pipeline == query.pipeline)
    if query.review is ReviewFilter.not_assessed:
        stmt = stmt.where(t.c.assessed == false())
    elif query.review is not None:
        stmt = stmt.where(t.c.review == query.review.value)
    if query.model:
        stmt = stmt.where(t.c.model_name == query.model)
    if query.date_from:
        stmt = stmt.where(t.c.created_at_s >= _day_start_s(query.date_from))
    if query.date_to and query.date_to < date.max:
        stmt = stmt.where(t.c.created_at_s < _day_start_s(query.date_to + timedelta(days=1)))
    if query.cursor:
        after = decode_cursor(query.cursor)
        stmt = stmt.where(tuple_(t.c.urgency, t.c.created_at_s, t.c.id) < tuple_(*after))
    order = (t.c.urgency.desc(), t.c.created_at_s.desc(), t.c.id.desc())
    return stmt.order_by(*order).limit(query.limit + 1)


def _item(m: Any) -> WorklistItem:
    return WorklistItem(
        id=m["id"], pipeline=m["pipeline"], stat=m["stat"], positive=m["positive"],
        assessed=m["assessed"], review=Review(m["review"]), model_name=m["model_name"],
        model_version=m["model_version"], patient_id=m["patient_id"],
        created_at=datetime.fromtimestamp(m["created_at_s"], UTC),
    )  # fmt: skip


class ReportIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, report: Report, priority: int | None = None) -> None:
        """Index a saved report; a report saved again (its timings, a re-analysis)
        keeps its review state, and a STAT once stays STAT."""
        row = _row(report, priority)
        t = report_index
        with self.engine.begin() as conn:
            known = conn.execute(select(t.c.stat).where(t.c.id == report.id)).first()
            if known is None:
                conn.execute(t.insert().values(**row, review=Review.unreviewed.value))
                return
            if known.stat:
                row.update(stat=True, urgency=2)
            conn.execute(update(t).where(t.c.id == report.id).values(**row))

    def set_review(self, rid: str, verdicts: Sequence[str]) -> None:
        state = review_state(verdicts).value
        with self.engine.begin() as conn:
            conn.execute(update(report_index).where(report_index.c.id == rid).values(review=state))

    def page(self, query: WorklistQuery) -> WorklistPage:
        with self.engine.connect() as conn:
            rows = [r._mapping for r in conn.execute(page_query(query))]
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        last = rows[-1] if more else None
        cursor = encode_cursor(last["urgency"], last["created_at_s"], last["id"]) if last else None
        return WorklistPage(items=[_item(m) for m in rows], next_cursor=cursor)

    def is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return not conn.execute(select(func.count()).select_from(report_index)).scalar()

    def backfill(self, reports: Iterable[Report]) -> int:
        """Index reports saved before the index existed (at start-up, when it is empty)."""
        count = 0
        for report in reports:
            self.put(report)
            count += 1
        return count
