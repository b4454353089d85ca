"""`aidx models validate`'s shadow part: when the model has a shadow (candidate) version
(AIDX_SHADOW_VERSIONS, the card's `shadow:`, or --shadow), the same dataset is scored
by it too and the report gets a comparison section; the comparisons production stored
(the shadow tables) are summarised beside it when the store holds any."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from aidx.inference.repository import ModelEntry, load_entry
from aidx.inference.serving import ModelService
from aidx.inference.settings import Settings
from aidx.inference.shadow_store import ShadowStore
from aidx.inference.store import create_store
from aidx.inference.validation import evaluate as ev
from aidx.inference.validation.report import Section, ValidationReport, add_section
from aidx.inference.validation.shadow import (
    ComputeTimer,
    Version,
    comparison_section,
    stored_section,
)
from aidx.inference.validation.sources import Scored

log = logging.getLogger(__name__)


def pinned(settings: Settings, model: str, serving: int | None) -> Settings:
    """Settings that serve `model` at `serving` (None: as configured) with no shadow
    running beside it: each version is scored in a pass of its own."""
    shadow = settings.shadow.model_copy(
        update={
            "versions": {**settings.shadow.versions, model: 0},
            "serving": (
                settings.shadow.serving
                if serving is None
                else {**settings.shadow.serving, model: serving}
            ),
        }
    )
    return settings.model_copy(update={"shadow": shadow})


def shadow_version(settings: Settings, entry: ModelEntry, asked: int | None) -> int | None:
    """--shadow (0: none) over the setting and the card, as the service decides."""
    if asked is not None:
        return asked if asked and asked != entry.version else None
    return ModelService(settings).shadow_version(entry)


def thresholds(entry: ModelEntry) -> dict[str, float]:
    card = entry.card
    return {label.name: label.threshold for label in card.labels} if card else {}


def version_of(
    entry: ModelEntry, scored: Scored, timer: ComputeTimer, labels_file: Path
) -> Version:
    limits = thresholds(entry)
    data = ev.join(scored.items, ev.read_labels(labels_file, list(limits)))
    return Version(entry.version, data, limits, timer)


def stored_comparisons(settings: Settings, model: str) -> Section | None:
    """Production's stored comparisons of `model`, if the store exists and holds any."""
    url = settings.store_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None  # no store here: nothing to create
    try:
        db = create_store(url)
        try:
            if not inspect(db).has_table("shadow_batches"):
                return None
            summaries = ShadowStore(db).summaries(model).get(model, [])
        finally:
            db.dispose()
    except SQLAlchemyError as exc:  # the report goes on without production's part
        log.warning("shadow comparisons not read from the store: %s", exc)
        return None
    return stored_section(model, summaries)


def with_shadow_sections(
    report: ValidationReport,
    serving: Version,
    shadow: Version | None,
    stored: Section | None,
) -> ValidationReport:
    if shadow is not None:
        section = comparison_section(serving, shadow, seed=report.seed, resamples=report.resamples)
        report = add_section(report, section)
    if stored is not None:
        report = add_section(report, stored)
    return report


def load_shadow_entry(entry: ModelEntry, version: int) -> ModelEntry:
    shadow = load_entry(entry.directory, version=version)
    if shadow.problem is not None:
        raise ValueError(f"shadow v{version} of {entry.name}: {shadow.problem}")
    return shadow
