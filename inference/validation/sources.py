"""What each pipeline offers the `validate` command (its `ValidationKit`): score a
dataset folder through the serving path, write its recipe's held-out set to a
folder with labels, and line its card's stated metrics up against a report."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom

from aidx.inference.serving import ModelService
from aidx.inference.validation.evaluate import ExtraStatistics, ScoredItem
from aidx.inference.validation.report import CardComparison, ValidationReport

Progress = Callable[[int, int], None]  # (items done, items in all)

# DICOM header -> subgroup attribute
HEADER_ATTRIBUTES = {
    "PatientSex": "sex",
    "PatientAge": "age",
    "Manufacturer": "manufacturer",
    "ViewPosition": "view",
}


@dataclass
class Scored:
    items: list[ScoredItem] = field(default_factory=list)
    not_scored: Counter[str] = field(default_factory=Counter)  # reason code -> count
    found: int = 0  # inputs found in the dataset


class ValidationKit(Protocol):
    """A pipeline's side of `aidx models validate`."""

    input_kind: str  # how the dataset folder is laid out, for the command's help
    extra_subgroups: tuple[str, ...]  # labels-file columns split by besides the usual ones

    async def score(self, models: ModelService, dataset: Path, progress: Progress) -> Scored: ...

    def write_heldout(self, folder: Path, n: int, seed: int) -> Path:
        """Write the recipe's held-out set (recipe seed `seed`, first `n` items) to
        `folder` and return the labels CSV written beside it."""
        ...

    def compare(
        self, card_metrics: dict[str, Any], report: ValidationReport
    ) -> list[CardComparison]:
        """The card's stated metrics against the measured ones."""
        ...

    def extra(self) -> tuple[ExtraStatistics, dict[str, str]] | None:
        """The pipeline's own metrics over items' `extras` and their meanings (or None)."""
        ...


def header_attributes(path: Path) -> dict[str, str]:
    """Subgroup attributes from a DICOM file's header (sex, age, manufacturer, view)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    found = {}
    for keyword, attribute in HEADER_ATTRIBUTES.items():
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            found[attribute] = value
    return found


async def bounded_gather(
    jobs: Sequence[Callable[[], Awaitable[None]]], in_flight: int, progress: Progress
) -> None:
    """Run the jobs with at most `in_flight` at once (enough for the batcher to batch),
    reporting progress as each ends."""
    gate = asyncio.Semaphore(in_flight)
    done = 0

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        nonlocal done
        async with gate:
            await job()
        done += 1
        progress(done, len(jobs))

    await asyncio.gather(*(one(job) for job in jobs))
