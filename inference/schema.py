"""Every table of the service's store, declared once on one `metadata`.

The engine owns the schema so that what `init_store` and the Alembic environment see
never depends on which feature modules happened to be imported. The feature stores
(the outbox, lab history and alerts, whole-slide jobs) import their table from here;
the layers above may import the engine, never the other way round. A change here
needs an Alembic revision in aidx.inference.migrations (tests/store checks that the
two agree).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# integrations/outbox/store.py: objects waiting for (or done with) their destination.
outbox = Table(
    "outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("destination", String(32), nullable=False),
    Column("object_key", String(200), nullable=False),
    Column("kind", String(32), nullable=False),  # dicom, fhir-bundle, hl7v2
    Column("media_type", String(100), nullable=False),
    Column("report_id", String(36)),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float, nullable=False, default=0.0),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float),
    Index("ix_outbox_due", "state", "next_attempt_at"),
    Index("ix_outbox_destination", "destination", "state"),
    Index("ix_outbox_report", "report_id"),  # a report's deliveries (its turnaround)
)
# Each outbox entry's payload (a secondary capture is megabytes), beside its row: on
# SQLite an update rewrites the whole row, so a lease or a delivery would rewrite it.
outbox_payloads = Table(
    "outbox_payloads",
    metadata,
    Column("id", String(36), primary_key=True),  # the outbox entry's
    Column("payload", LargeBinary, nullable=False),
)

# pipelines/labs/store.py: one result per patient, analyte and specimen.
lab_history = Table(
    "lab_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(128), nullable=False),
    Column("analyte", String(64), nullable=False),
    Column("specimen_id", String(128), nullable=False),
    Column("value", Float, nullable=False),  # canonical unit
    Column("collected_at_s", Float, nullable=False),  # POSIX seconds, UTC
    Column("usable", Boolean, nullable=False),  # False: suspect specimen, no baseline
    Column("received_at_s", Float, nullable=False),
    UniqueConstraint("patient_id", "analyte", "specimen_id", name="uq_lab_history_result"),
    Index("ix_lab_history_lookup", "patient_id", "analyte", "collected_at_s"),
)

# pipelines/labs/store.py: one alert per specimen, rule and analyte.
lab_alerts = Table(
    "lab_alerts",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("patient_id", String(128), nullable=False),
    Column("specimen_id", String(128), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("analyte", String(64), nullable=True),
    Column("severity", String(16), nullable=False),
    Column("message", String(1000), nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("source_id", String(128), nullable=True),
    Column("created_at_s", Float, nullable=False),
    Column("state", String(16), nullable=False, default="open"),
    Column("acked_by", String(128), nullable=True),
    Column("acked_at_s", Float, nullable=True),
    Column("ack_reason", String(1000), nullable=True),
    Index("ix_lab_alerts_state", "state", "seq"),
)

# pipelines/wsi/job_store.py: whole-slide jobs, their progress, owner replica and heartbeat.
wsi_jobs = Table(
    "wsi_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("state", String(16), nullable=False, index=True),
    Column("slide_path", Text, nullable=False),  # never sent to clients nor logged
    Column("uploaded", Boolean, nullable=False, default=False),
    Column("mpp", Float, nullable=True),  # the request's MPP, if it gave one
    Column("slide", JSON, nullable=True),  # SlideInfo.summary()
    Column("params", JSON, nullable=False),
    Column("submitted_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("tiles_total", Integer, nullable=True),
    Column("tiles_done", Integer, nullable=False, default=0),
    Column("rate_tiles_s", Float, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("report_id", String(36), nullable=True),
    Column("owner", String(128), nullable=True),  # the replica running it (replica_id)
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    # when the slide was received (POSIX seconds): its turnaround starts here, not at
    # the job's creation (after an upload or a pull has been written to disk)
    Column("received_at_s", Float, nullable=True),
)

# inference/feedback.py: clinicians' answers on a report's findings, append-only; a
# user's current answer on a finding (or region) is their latest row.
report_feedback = Table(
    "report_feedback",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("report_id", String(36), nullable=False),
    Column("pipeline", String(16), nullable=False),
    Column("model_name", String(128), nullable=True),  # agreement per model version
    Column("model_version", Integer, nullable=True),
    Column("finding", String(200), nullable=False),
    Column("region", Integer, nullable=True),  # a region of the finding, or the whole
    Column("model_present", Boolean, nullable=True),  # what the model said of the finding
    # the report's coarse groups (inference/cohort.py), for agreement per subgroup
    Column("site", String(64), nullable=True),
    Column("sex", String(8), nullable=True),
    Column("age_band", String(8), nullable=True),
    Column("actor", String(200), nullable=False),  # the API key's name
    Column("role", String(32), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("comment", Text, nullable=True),
    Column("answered_at_s", Float, nullable=False),
    Index("ix_report_feedback_report", "report_id", "seq"),
)

# inference/report_index.py: one row per report, for the review worklist: its kind,
# urgency (STAT, a finding present), model, review state; keyset-paged newest first.
report_index = Table(
    "report_index",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("pipeline", String(16), nullable=False),
    Column("urgency", Integer, nullable=False),  # 2 STAT, 1 a finding present, 0 routine
    Column("stat", Boolean, nullable=False),
    Column("positive", Boolean, nullable=False),  # the model found a finding present
    Column("assessed", Boolean, nullable=False),  # False: a finding was not assessed
    Column("review", String(16), nullable=False),  # unreviewed | agreed | disagreed | unsure
    Column("model_name", String(128), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("patient_id", String(128), nullable=True),
    Column("created_at_s", Float, nullable=False),
    Index("ix_report_index_page", "pipeline", "urgency", "created_at_s", "id"),
    Index("ix_report_index_review", "pipeline", "review", "urgency", "created_at_s", "id"),
)

# service/sessions.py: the review workspace's sign-in sessions. Only the token's SHA-256
# is kept; a session acts as the API key it was opened with (by the key's SHA-256).
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("key_sha256", String(64), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at_s", Float, nullable=False),
    Column("expires_at_s", Float, nullable=False, index=True),
)

# service/shares.py: read-only links to one report (QR codes). The link's token is
# signed with the service's share secret; the row is what makes it revocable.
report_shares = Table(
    "report_shares",
    metadata,
    Column("share_id", String(32), primary_key=True),
    Column("report_id", String(36), nullable=False, index=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at_s", Float, nullable=False),
    Column("expires_at_s", Float, nullable=False),
    Column("revoked_at_s", Float, nullable=True),
    Column("revoked_by", String(128), nullable=True),
)

# inference/drift_store.py: what each model saw and said, one row per analysed input,
# kept as long as it is in a window (the last N of its model, or the last days).
drift_observations = Table(
    "drift_observations",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(128), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("observed_at_s", Float, nullable=False),  # POSIX seconds, UTC
    Column("features", JSON, nullable=False),  # name -> number, text or boolean
    Index("ix_drift_observations_model", "model_name", "model_version", "seq"),
    Index("ix_drift_observations_time", "model_name", "model_version", "observed_at_s"),
)

# inference/shadow_store.py: each served batch a shadow version also ran, its latency,
# and per label how the two versions compared (counts and the sums behind Pearson's r).
shadow_batches = Table(
    "shadow_batches",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(128), nullable=False),
    Column("serving_version", Integer, nullable=False),
    Column("shadow_version", Integer, nullable=False),
    Column("items", Integer, nullable=False),
    Column("serving_s", Float, nullable=False),  # the serving version's compute time
    Column("shadow_s", Float, nullable=False),
    Column("compared_at_s", Float, nullable=False),
    Index("ix_shadow_batches_model", "model_name", "serving_version", "shadow_version"),
)

shadow_labels = Table(
    "shadow_labels",
    metadata,
    Column("batch_seq", Integer, ForeignKey("shadow_batches.seq"), nullable=False),
    Column("label", String(200), nullable=False),
    Column("n", Integer, nullable=False),
    Column("decided", Integer, nullable=False),  # 0: no thresholds to call present on
    Column("agree", Integer, nullable=False),
    Column("both_present", Integer, nullable=False),
    Column("serving_only", Integer, nullable=False),
    Column("shadow_only", Integer, nullable=False),
    Column("sum_x", Float, nullable=False),
    Column("sum_y", Float, nullable=False),
    Column("sum_xx", Float, nullable=False),
    Column("sum_yy", Float, nullable=False),
    Column("sum_xy", Float, nullable=False),
    PrimaryKeyConstraint("batch_seq", "label", name="pk_shadow_labels"),
)
