"""Outbox rows in the service's store (SQLite or PostgreSQL, SQLAlchemy Core).

An entry's id is derived from its destination and object key (a SOP Instance UID, a
FHIR bundle key, an HL7 control id), so enqueueing the same object twice is a no-op
and a resend after a crash is the same object. A worker claims due entries with a
lease; a process killed mid-delivery leaves a lease that expires, and the entry is
delivered again (the destinations treat the resend idempotently).
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Engine,
    Select,
    and_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from aidx.inference.errors import AidxError, ErrorKind, NotFound
from aidx.inference.schema import outbox, outbox_payloads

_NAMESPACE = uuid.UUID("5d0f3e8e-7b7c-4c52-9d0e-3f1d2b6a9c44")
MAX_ERROR_CHARS = 2000


class State(enum.StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"  # dead: out of attempts or refused for good; retry or drop by hand


class OutboxConflict(AidxError):
    kind = ErrorKind.conflict
    code = "outbox_entry_not_failed"


def entry_id(destination: str, object_key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{destination}|{object_key}"))


@dataclass(frozen=True)
class OutgoingObject:
    """One object for one destination, before it is in the outbox."""

    destination: str
    object_key: str
    kind: str
    media_type: str
    payload: bytes
    report_id: str | None = None


@dataclass(frozen=True)
class Entry:
    id: str
    destination: str
    object_key: str
    kind: str
    media_type: str
    report_id: str | None
    payload: bytes
    state: State
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None

    def summary(self) -> dict[str, object]:
        """What the API shows: everything but the payload (which holds PHI)."""
        return {
            "id": self.id,
            "destination": self.destination,
            "object_key": self.object_key,
            "kind": self.kind,
            "media_type": self.media_type,
            "report_id": self.report_id,
            "size_bytes": len(self.payload),
            "state": self.state.value,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "delivered_at": self.delivered_at,
        }


@dataclass
class ReportProgress:
    """One report's entries for one destination, counted by state."""

    pending: int = 0
    delivered: int = 0
    failed: int = 0
    last_delivered_at: float | None = None

    @property
    def state(self) -> State:
        if self.failed:
            return State.failed
        return State.pending if self.pending or not self.delivered else State.delivered


def _newest_first(
    query: Select[Any], state: State | None, destination: str | None, limit: int
) -> Select[Any]:
    if state is not None:
        query = query.where(outbox.c.state == state.value)
    if destination is not None:
        query = query.where(outbox.c.destination == destination)
    return query.order_by(outbox.c.created_at.desc(), outbox.c.id).limit(limit)


def _with_payloads(query: Select[Any]) -> Select[Any]:
    """`query` (of outbox columns) reading each entry's payload from its own table."""
    return query.add_columns(outbox_payloads.c.payload).join_from(
        outbox, outbox_payloads, outbox_payloads.c.id == outbox.c.id
    )


_ENTRIES = _with_payloads(select(outbox))


def _entry(row: object) -> Entry:
    m = row._mapping  # type: ignore[attr-defined]
    return Entry(
        id=m["id"],
        destination=m["destination"],
        object_key=m["object_key"],
        kind=m["kind"],
        media_type=m["media_type"],
        report_id=m["report_id"],
        payload=bytes(m["payload"]),
        state=State(m["state"]),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        last_error=m["last_error"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        delivered_at=m["delivered_at"],
    )


class OutboxStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def enqueue(self, obj: OutgoingObject, *, now: float | None = None) -> bool:
        """Add `obj`; False when the same object (destination + key) is already there."""
        now = time.time() if now is None else now
        values = {
            "id": entry_id(obj.destination, obj.object_key),
            "destination": obj.destination,
            "object_key": obj.object_key,
            "kind": obj.kind,
            "media_type": obj.media_type,
            "report_id": obj.report_id,
            "state": State.pending.value,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_until": 0.0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.engine.begin() as conn:  # the entry and its payload, or neither
                conn.execute(insert(outbox).values(**values))
                conn.execute(insert(outbox_payloads).values(id=values["id"], payload=obj.payload))
        except IntegrityError:
            return False
        return True

    def claim_due(
        self,
        *,
        lease_s: float,
        limit: int,
        now: float | None = None,
        destination: str | None = None,
        other_than: Collection[str] | None = None,
    ) -> list[Entry]:
        """Pending entries that are due and not leased, each leased to the caller;
        only `destination`'s when given, only other destinations' than `other_than`
        when given. The conditional UPDATE makes a claim exclusive among workers and
        replicas; on PostgreSQL the SELECT also locks its rows and skips rows another
        worker holds (FOR UPDATE SKIP LOCKED), so concurrent claimers neither wait on
        nor deadlock with each other. SQLite ignores the clause: one writer at a time."""
        now = time.time() if now is None else now
        due = and_(
            outbox.c.state == State.pending.value,
            outbox.c.next_attempt_at <= now,
            outbox.c.lease_until <= now,
        )
        if destination is not None:
            due = and_(due, outbox.c.destination == destination)
        if other_than is not None:
            due = and_(due, outbox.c.destination.not_in(other_than))
        with self.engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(outbox.c.id)
                    .where(due)
                    .order_by(outbox.c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not ids:
                return []
            # One conditional UPDATE for them all; the rows it won, read with their payloads.
            won = conn.execute(
                update(outbox)
                .where(and_(outbox.c.id.in_(ids), due))
                .values(lease_until=now + lease_s)
                .returning(outbox.c.id)
            ).scalars()
            rows = conn.execute(_ENTRIES.where(outbox.c.id.in_(list(won)))).all()
        order = {eid: i for i, eid in enumerate(ids)}
        return sorted((_entry(row) for row in rows), key=lambda e: order[e.id])

    def release(self, ids: Collection[str]) -> None:
        """Claimed entries given back untried (their worker is stopping): due again
        for any worker at once instead of after the lease."""
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(ids), outbox.c.state == State.pending.value)
                .values(lease_until=0.0)
            )

    def mark_delivered(self, eid: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == eid)
                .values(
                    state=State.delivered.value,
                    attempts=outbox.c.attempts + 1,
                    delivered_at=now,
                    updated_at=now,
                    lease_until=0.0,
                )
            )

    def mark_failed_attempt(
        self, eid: str, error: str, *, retry_at: float | None, now: float | None = None
    ) -> None:
        """Record a failed attempt: retry at `retry_at`, or dead (failed) when None."""
        now = time.time() if now is None else now
        values: dict[str, object] = {
            "attempts": outbox.c.attempts + 1,
            "last_error": error[:MAX_ERROR_CHARS],
            "updated_at": now,
            "lease_until": 0.0,
        }
        if retry_at is None:
            values["state"] = State.failed.value
        else:
            values["next_attempt_at"] = retry_at
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id == eid).values(**values))

    def get(self, eid: str) -> Entry:
        with self.engine.connect() as conn:
            row = conn.execute(_ENTRIES.where(outbox.c.id == eid)).first()
        if row is None:
            raise NotFound(f"no outbox entry {eid!r}", code="outbox_entry_not_found")
        return _entry(row)

    def summaries(
        self, *, state: State | None = None, destination: str | None = None, limit: int = 100
    ) -> list[dict[str, object]]:
        """`list` as the API shows it (`Entry.summary`), without reading the payloads:
        a secondary capture is megabytes, and a listing must not read them all."""
        columns = [c for c in outbox.c if c.name != "lease_until"]
        size = func.length(outbox_payloads.c.payload).label("size_bytes")
        query = _newest_first(
            select(*columns, size).join_from(
                outbox, outbox_payloads, outbox_payloads.c.id == outbox.c.id
            ),
            state,
            destination,
            limit,
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def list(
        self, *, state: State | None = None, destination: str | None = None, limit: int = 100
    ) -> list[Entry]:
        query = _newest_first(_ENTRIES, state, destination, limit)
        with self.engine.connect() as conn:
            return [_entry(r) for r in conn.execute(query)]

    def counts(self) -> dict[str, dict[str, object]]:
        """Per destination: counts by state and the latest error."""
        out: dict[str, dict[str, object]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.destination, outbox.c.state, func.count()).group_by(
                    outbox.c.destination, outbox.c.state
                )
            )
            for destination, state, count in rows:
                entry = out.setdefault(
                    destination,
                    {**{s.value: 0 for s in State}, "last_error": None, "last_error_at": None},
                )
                entry[state] = count
            for destination, entry in out.items():
                last = conn.execute(
                    select(outbox.c.last_error, outbox.c.updated_at)
                    .where(outbox.c.destination == destination, outbox.c.last_error.is_not(None))
                    .order_by(outbox.c.updated_at.desc())
                    .limit(1)
                ).first()
                if last is not None:
                    entry["last_error"], entry["last_error_at"] = last[0], last[1]
        return out

    def report_progress(self, report_id: str) -> dict[str, ReportProgress]:
        """Per destination, how far the objects of one report are (payloads unread)."""
        query = (
            select(
                outbox.c.destination, outbox.c.state, func.count(), func.max(outbox.c.delivered_at)
            )
            .where(outbox.c.report_id == report_id)
            .group_by(outbox.c.destination, outbox.c.state)
        )
        found: dict[str, ReportProgress] = {}
        with self.engine.connect() as conn:
            for destination, state, count, last in conn.execute(query):
                progress = found.setdefault(destination, ReportProgress())
                setattr(progress, state, count)
                if state == State.delivered.value:
                    progress.last_delivered_at = last
        return found

    def retry(self, eid: str, *, now: float | None = None) -> Entry:
        """A dead (failed) entry back to pending, due now, with fresh attempts."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(outbox)
                .where(outbox.c.id == eid, outbox.c.state == State.failed.value)
                .values(
                    state=State.pending.value,
                    attempts=0,
                    next_attempt_at=now,
                    lease_until=0.0,
                    updated_at=now,
                )
            ).rowcount
        if not changed:
            self._refuse(eid, "retried")
        return self.get(eid)

    def drop(self, eid: str) -> None:
        """Delete a dead (failed) entry for good."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                outbox.delete().where(outbox.c.id == eid, outbox.c.state == State.failed.value)
            ).rowcount
            if changed:
                conn.execute(outbox_payloads.delete().where(outbox_payloads.c.id == eid))
        if not changed:
            self._refuse(eid, "dropped")

    def _refuse(self, eid: str, verb: str) -> None:
        entry = self.get(eid)  # 404 when absent
        raise OutboxConflict(
            f"only a failed entry can be {verb}; this one is {entry.state.value}", id=eid
        )
