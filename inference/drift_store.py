"""Each model's recent observations, in the service's store (`drift_observations`).

Kept in the store rather than in memory so that a window outlives a restart (a day's
window would otherwise start empty at every deploy) and, on PostgreSQL, is the site's
window, shared by every replica that serves the model. A row is deleted once it is in
neither window: older than the day window and not among its model's last N.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from aidx.inference.drift import Observation, Value
from aidx.inference.schema import drift_observations

t = drift_observations


class DriftStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, model: str, version: int, features: Mapping[str, Value], at_s: float) -> None:
        self.add_many(model, version, [features], at_s)

    def add_many(
        self, model: str, version: int, observations: Sequence[Mapping[str, Value]], at_s: float
    ) -> None:
        """Several observations made at once (a lab message's specimens): one insert."""
        rows = [{"model_name": model, "model_version": version, "observed_at_s": at_s,
                 "features": dict(features)} for features in observations]  # fmt: skip
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(t), rows)

    def _of(self, model: str, version: int) -> Any:
        return (t.c.model_name == model) & (t.c.model_version == version)

    def last(self, model: str, version: int, n: int) -> list[Observation]:
        """The model version's last `n` observations, newest first."""
        query = select(t.c.features).where(self._of(model, version))
        query = query.order_by(t.c.seq.desc()).limit(n)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def since(self, model: str, version: int, since_s: float, limit: int) -> list[Observation]:
        """Its observations from `since_s` on (POSIX seconds), the newest `limit`."""
        query = select(t.c.features).where(self._of(model, version))
        query = query.where(t.c.observed_at_s >= since_s).order_by(t.c.seq.desc()).limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def prune(self, model: str, version: int, keep_last: int, since_s: float) -> int:
        """Delete the model's rows older than `since_s` and not among its last
        `keep_last` (and every other version's older than `since_s`). The number deleted."""
        nth = select(t.c.seq).where(self._of(model, version)).order_by(t.c.seq.desc())
        nth = nth.offset(keep_last - 1).limit(1)
        with self.engine.begin() as conn:
            oldest_kept = conn.execute(nth).scalar()
            stale = (t.c.model_name == model) & (t.c.observed_at_s < since_s)
            if oldest_kept is not None:  # within the last N: kept, however old
                stale = stale & ((t.c.model_version != version) | (t.c.seq < oldest_kept))
            else:
                stale = stale & (t.c.model_version != version)
            return conn.execute(delete(t).where(stale)).rowcount or 0
