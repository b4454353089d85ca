"""The store's schema does not depend on import order: a fresh interpreter that imports
only the engine's store sees every table, and `init_store` creates all of them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

TABLES = {
    "outbox", "outbox_payloads", "lab_history", "lab_alerts", "wsi_jobs", "report_feedback",
    "report_index", "ui_sessions", "report_shares", "drift_observations", "shadow_batches",
    "shadow_labels",
}  # fmt: skip

_PROBE = textwrap.dedent(
    """
    import json, sys
    from sqlalchemy import inspect
    from aidx.inference.store import create_store, init_store, metadata

    engine = create_store(sys.argv[1])
    declared = sorted(metadata.tables)
    init_store(engine)
    with engine.connect() as conn:
        created = sorted(inspect(conn).get_table_names())
    engine.dispose()
    layers = ("aidx.integrations", "aidx.pipelines")
    features = sorted(m for m in sys.modules if m.startswith(layers))
    print(json.dumps({"declared": declared, "created": created, "features": features}))
    """
)


def test_importing_only_the_store_declares_and_creates_every_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aidx.db'}"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["features"] == []  # no feature module was imported to get here
    assert set(seen["declared"]) == TABLES
    assert set(seen["created"]) == TABLES | {"alembic_version"}


def test_the_feature_stores_use_the_engine_tables() -> None:
    from aidx.inference import schema
    from aidx.integrations.outbox.store import outbox
    from aidx.pipelines.labs.store import lab_alerts, lab_history
    from aidx.pipelines.wsi.job_store import wsi_jobs

    assert outbox is schema.outbox and wsi_jobs is schema.wsi_jobs
    assert lab_history is schema.lab_history and lab_alerts is schema.lab_alerts
    assert set(schema.metadata.tables) == TABLES
