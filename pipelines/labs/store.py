"""Patient history and alerts in the service's store (SQLite by default).

History: one row per patient, analyte and specimen (a resend or a correction
replaces it, never duplicates it), so delta checks work across messages and
restarts. Alerts: one row per specimen, rule and analyte, keyed by a deterministic
id, so a resent message raises nothing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Engine,
    func,
    select,
    update,
)

from aidx.inference.errors import AidxError, ErrorKind, NotFound
from aidx.inference.schema import lab_alerts, lab_history


class Conflict(AidxError):
    kind = ErrorKind.conflict
    code = "conflict"


_ALERT_NAMESPACE = uuid.UUID("0b7f6d3e-2a7c-4c1e-9a55-3c0f1f5b8e21")


class Alert(BaseModel):
    id: str
    seq: int
    patient_id: str
    specimen_id: str
    rule: str
    analyte: str | None
    severity: str  # "critical" | "warning"
    message: str
    evidence: dict[str, Any]
    source_id: str | None
    created_at: datetime
    state: str  # "open" | "acknowledged"
    acked_by: str | None = None
    acked_at: datetime | None = None
    ack_reason: str | None = None


@dataclass(frozen=True)
class HistoryRow:
    patient_id: str
    analyte: str
    specimen_id: str
    value: float
    collected_at_s: float
    usable: bool


@dataclass(frozen=True)
class NewAlert:
    patient_id: str
    specimen_id: str
    rule: str
    analyte: str | None
    severity: str
    message: str
    evidence: dict[str, Any]
    source_id: str | None

    @property
    def id(self) -> str:
        key = f"{self.patient_id}|{self.specimen_id}|{self.rule}|{self.analyte or ''}"
        return str(uuid.uuid5(_ALERT_NAMESPACE, key))


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _alert(row: Any) -> Alert:
    m = row._mapping
    return Alert(
        id=m["id"],
        seq=m["seq"],
        patient_id=m["patient_id"],
        specimen_id=m["specimen_id"],
        rule=m["rule"],
        analyte=m["analyte"],
        severity=m["severity"],
        message=m["message"],
        evidence=m["evidence"],
        source_id=m["source_id"],
        created_at=_ts(m["created_at_s"]) or datetime.now(UTC),
        state=m["state"],
        acked_by=m["acked_by"],
        acked_at=_ts(m["acked_at_s"]),
        ack_reason=m["ack_reason"],
    )


def _insert(engine: Engine) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


class LabStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = _insert(engine)

    def previous(
        self, requests: Sequence[tuple[str, str, float]], analytes: Sequence[str], since_s: float
    ) -> list[HistoryRow]:
        """For each (patient_id, specimen_id, collected_at_s): the latest usable result
        per analyte collected before it (and after `since_s`), from another specimen."""
        h = lab_history.c
        rank = (
            func.row_number()
            .over(partition_by=h.analyte, order_by=h.collected_at_s.desc())
            .label("rank")
        )
        out: list[HistoryRow] = []
        with self.engine.connect() as conn:
            for patient_id, specimen_id, collected_at_s in requests:
                inner = (
                    select(h.analyte, h.specimen_id, h.value, h.collected_at_s, rank)
                    .where(h.patient_id == patient_id)
                    .where(h.analyte.in_(analytes))
                    .where(h.usable.is_(True))
                    .where(h.specimen_id != specimen_id)
                    .where(h.collected_at_s < collected_at_s)
                    .where(h.collected_at_s >= since_s)
                    .subquery()
                )
                query = select(
                    inner.c.analyte, inner.c.specimen_id, inner.c.value, inner.c.collected_at_s
                ).where(inner.c.rank == 1)
                out.extend(
                    HistoryRow(patient_id, analyte, sid, value, at, True)
                    for analyte, sid, value, at in conn.execute(query)
                )
        return out

    def save(self, rows: Sequence[HistoryRow], alerts: Sequence[NewAlert]) -> list[Alert]:
        """Store results (replacing a resent one) and alerts (once); returns the alerts
        that are new."""
        now = datetime.now(UTC).timestamp()
        created: list[Alert] = []
        with self.engine.begin() as conn:
            if rows:
                stmt = self._insert(lab_history)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["patient_id", "analyte", "specimen_id"],
                    set_={
                        "value": stmt.excluded.value,
                        "collected_at_s": stmt.excluded.collected_at_s,
                        "usable": stmt.excluded.usable,
                        "received_at_s": stmt.excluded.received_at_s,
                    },
                )
                conn.execute(
                    stmt,
                    [
                        {
                            "patient_id": r.patient_id,
                            "analyte": r.analyte,
                            "specimen_id": r.specimen_id,
                            "value": r.value,
                            "collected_at_s": r.collected_at_s,
                            "usable": r.usable,
                            "received_at_s": now,
                        }
                        for r in rows
                    ],
                )
            for a in alerts:
                stmt = (
                    self._insert(lab_alerts)
                    .values(
                        id=a.id,
                        patient_id=a.patient_id,
                        specimen_id=a.specimen_id,
                        rule=a.rule,
                        analyte=a.analyte,
                        severity=a.severity,
                        message=a.message,
                        evidence=a.evidence,
                        source_id=a.source_id,
                        created_at_s=now,
                        state="open",
                    )
                    .on_conflict_do_nothing(index_elements=["id"])
                    .returning(*lab_alerts.c)
                )
                created.extend(_alert(r) for r in conn.execute(stmt))
        return created

    def alerts(
        self,
        *,
        state: str | None = "open",
        after_seq: int = 0,
        limit: int = 100,
        specimen_id: str | None = None,
    ) -> list[Alert]:
        query = select(lab_alerts).where(lab_alerts.c.seq > after_seq)
        if state is not None:
            query = query.where(lab_alerts.c.state == state)
        if specimen_id is not None:
            query = query.where(lab_alerts.c.specimen_id == specimen_id)
        query = query.order_by(lab_alerts.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [_alert(r) for r in conn.execute(query)]

    def alert(self, alert_id: str) -> Alert:
        with self.engine.connect() as conn:
            row = conn.execute(select(lab_alerts).where(lab_alerts.c.id == alert_id)).first()
        if row is None:
            raise NotFound(f"no alert {alert_id!r}", code="alert_not_found")
        return _alert(row)

    def acknowledge(self, alert_id: str, *, by: str, reason: str) -> Alert:
        now = datetime.now(UTC).timestamp()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(lab_alerts)
                .where(lab_alerts.c.id == alert_id)
                .where(lab_alerts.c.state == "open")
                .values(state="acknowledged", acked_by=by, acked_at_s=now, ack_reason=reason)
            )
        if result.rowcount == 0:
            current = self.alert(alert_id)  # raises NotFound
            raise Conflict(
                f"alert {alert_id} was already acknowledged by {current.acked_by}",
                code="alert_already_acknowledged",
            )
        return self.alert(alert_id)
