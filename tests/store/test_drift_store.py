"""The drift windows in the store: the last N of a model version, those since a time,
and pruning that keeps whatever either window still holds."""

from __future__ import annotations

from pathlib import Path

from aidx.inference.drift_store import DriftStore
from aidx.inference.store import create_store, init_store


def test_windows_by_count_and_time_and_pruning_keep_what_a_window_holds(tmp_path: Path) -> None:
    engine = create_store(f"sqlite:///{tmp_path / 'drift.db'}")
    init_store(engine)
    store = DriftStore(engine)
    for i in range(10):  # one an hour, hours 0..9
        store.add("m", 1, {"i": i}, at_s=3600.0 * i)
    store.add("m", 2, {"i": 99}, at_s=0.0)  # another version: its own window
    assert [o["i"] for o in store.last("m", 1, 3)] == [9, 8, 7]
    assert [o["i"] for o in store.since("m", 1, 3600.0 * 6, limit=100)] == [9, 8, 7, 6]
    assert [o["i"] for o in store.since("m", 1, 0.0, limit=2)] == [9, 8]
    # keep the last 3, and everything from hour 5 on: hours 0..4 and version 2 go
    assert store.prune("m", 1, keep_last=3, since_s=3600.0 * 5) == 6
    assert [o["i"] for o in store.last("m", 1, 100)] == [9, 8, 7, 6, 5]
    assert store.last("m", 2, 100) == []
    engine.dispose()
