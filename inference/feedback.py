"""Clinicians' feedback on a report's findings: per finding (or one of its regions)
agree / disagree / not sure, with a coded reason and an optional comment.

Kept append-only in the store (`report_feedback`): a user's current answer on a
finding is their latest row, the earlier ones are its history. Answering again what
one already answered records nothing (idempotent per user and finding).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Engine, insert, select

from aidx.inference.cohort import Cohort
from aidx.inference.schema import report_feedback

MAX_COMMENT_CHARS = 1000
MAX_ANSWERS = 200


class Verdict(enum.StrEnum):
    agree = "agree"
    disagree = "disagree"
    not_sure = "not_sure"


class ReasonCode(enum.StrEnum):
    missed_finding = "missed_finding"  # the model said absent (or missed a region)
    false_positive = "false_positive"  # the model said present
    wrong_location = "wrong_location"  # present, but the region is elsewhere
    image_quality = "image_quality"
    not_assessable = "not_assessable"  # the reader cannot judge it either
    other = "other"  # say why in the comment


class AnswerIn(BaseModel):
    """One answer on one finding, named by its label (e.g. "Pneumonia"); `region`
    (0-based, a whole-slide region's index in the finding's `regions`) narrows it."""

    finding: str = Field(min_length=1, max_length=200, examples=["Pneumonia"])
    region: int | None = Field(default=None, ge=0)
    verdict: Verdict
    reason: ReasonCode | None = None
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)

    @model_validator(mode="after")
    def _reasoned(self) -> AnswerIn:
        if self.verdict is Verdict.disagree and self.reason is None:
            raise ValueError("a disagreement needs a reason code")
        if self.reason is ReasonCode.other and not (self.comment or "").strip():
            raise ValueError("reason 'other' needs a comment")
        return self

    def key(self) -> tuple[str, int | None]:
        return self.finding, self.region


class FeedbackRequest(BaseModel):
    answers: list[AnswerIn] = Field(min_length=1, max_length=MAX_ANSWERS)

    @model_validator(mode="after")
    def _one_per_finding(self) -> FeedbackRequest:
        keys = [a.key() for a in self.answers]
        if len(set(keys)) != len(keys):
            raise ValueError("one answer per finding (and region) in a request")
        return self


class Answer(BaseModel):
    """An answer as recorded: who gave it, when, and whether it is still current."""

    seq: int
    finding: str
    region: int | None
    verdict: Verdict
    reason: ReasonCode | None
    comment: str | None
    by: str = Field(description="the API key's name")
    role: str
    answered_at: datetime
    current: bool


@dataclass(frozen=True)
class Subject:
    """What is answered on: a report (or a lab alert), the model that made it, and
    what it said of each finding (present, absent, or None: not assessed)."""

    report_id: str
    pipeline: str
    model_name: str | None
    model_version: int | None
    present: Mapping[str, bool | None]
    cohort: Cohort = Cohort()


def _answer(m: Any, current: bool) -> Answer:
    return Answer(
        seq=m["seq"],
        finding=m["finding"],
        region=m["region"],
        verdict=Verdict(m["verdict"]),
        reason=ReasonCode(m["reason"]) if m["reason"] else None,
        comment=m["comment"],
        by=m["actor"],
        role=m["role"],
        answered_at=datetime.fromtimestamp(m["answered_at_s"], UTC),
        current=current,
    )


def _same(row: Any, answer: AnswerIn) -> bool:
    reason = answer.reason.value if answer.reason else None
    return (row["verdict"], row["reason"], row["comment"]) == (
        answer.verdict.value,
        reason,
        answer.comment,
    )


class FeedbackStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def history(self, report_id: str) -> list[Answer]:
        """Every answer on the report, oldest first; the latest of each user on each
        finding (and region) is current."""
        query = (
            select(report_feedback)
            .where(report_feedback.c.report_id == report_id)
            .order_by(report_feedback.c.seq)
        )
        with self.engine.connect() as conn:
            rows = [r._mapping for r in conn.execute(query)]
        latest = {(m["actor"], m["finding"], m["region"]): m["seq"] for m in rows}
        return [
            _answer(m, latest[(m["actor"], m["finding"], m["region"])] == m["seq"]) for m in rows
        ]

    def record(self, subject: Subject, actor: str, role: str, answers: Sequence[AnswerIn]) -> int:
        """Record `actor`'s answers; those equal to the actor's current one are not
        recorded again. The number recorded."""
        now = time.time()
        with self.engine.begin() as conn:
            query = (
                select(report_feedback)
                .where(report_feedback.c.report_id == subject.report_id)
                .where(report_feedback.c.actor == actor)
                .order_by(report_feedback.c.seq)
            )
            current = {(r.finding, r.region): r._mapping for r in conn.execute(query)}
            rows = [
                _row(subject, actor, role, a, now)
                for a in answers
                if a.key() not in current or not _same(current[a.key()], a)
            ]
            if rows:
                conn.execute(insert(report_feedback), rows)
        return len(rows)


def _row(subject: Subject, actor: str, role: str, a: AnswerIn, now: float) -> dict[str, Any]:
    return {
        "report_id": subject.report_id,
        "pipeline": subject.pipeline,
        "model_name": subject.model_name,
        "model_version": subject.model_version,
        "finding": a.finding,
        "region": a.region,
        "model_present": subject.present.get(a.finding),
        "site": subject.cohort.site,
        "sex": subject.cohort.sex.value,
        "age_band": subject.cohort.age_band.value,
        "actor": actor,
        "role": role,
        "verdict": a.verdict.value,
        "reason": a.reason.value if a.reason else None,
        "comment": a.comment,
        "answered_at_s": now,
    }
