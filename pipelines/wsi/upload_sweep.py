"""Uploads a replica left behind: the sweep.

A replica deletes an uploaded slide (or a pulled DICOM series folder) once its job
has ended (job_runner.py). One that dies first, mid-upload or mid-job, leaves the
file under var/wsi/. Any replica using that folder sweeps it at start-up and every
AIDX_WSI_UPLOAD_SWEEP_S: an entry not written for AIDX_WSI_UPLOAD_STALE_S is deleted
when no job names it (abandoned: a partial upload, or a slide refused or never
recorded) or when all its jobs have ended (unless AIDX_WSI_UPLOAD_RETENTION=keep).
A queued or running job's slide is never deleted: if that job's replica is gone, the
heartbeat protocol fails the job first (job_store.py) and a later sweep takes it.

Names under var/wsi/ are aidx's own (a random id and a suffix), never the client's
file name, so the log and the audit entries carry no patient data.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aidx.inference.audit import AuditLog
from aidx.inference.metrics import ServiceMetrics
from aidx.pipelines.wsi.job_store import ACTIVE, JobStore

log = logging.getLogger(__name__)
SWEPT_FOLDERS = ("uploads", "dicom")  # under var/wsi/: uploaded files, DICOM series folders


class SweepReason(enum.StrEnum):
    abandoned = "abandoned"  # no job names it
    job_ended = "job_ended"  # its jobs have ended, its replica died before deleting it


@dataclass(frozen=True)
class Swept:
    path: Path
    reason: SweepReason


class UploadSweeper:
    """Deletes the stale uploads under `var_dir`/wsi/ (see the module's docstring)."""

    def __init__(
        self,
        store: JobStore,
        var_dir: Path,
        *,
        stale_s: float,
        every_s: float,
        keep_ended: bool = False,
        audit: AuditLog | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.store = store
        self.root = var_dir / "wsi"
        self.stale_s = stale_s
        self.every_s = every_s
        self.keep_ended = keep_ended
        self.audit = audit
        self.metrics = metrics

    def sweep(self, now: float | None = None) -> list[Swept]:
        """Delete what is stale at `now` (epoch seconds); what was deleted, and why."""
        cutoff = (time.time() if now is None else now) - self.stale_s
        swept = []
        for entry in self._written_before(cutoff):
            reason = self._reason(entry)
            if reason is not None and _remove(entry):
                swept.append(Swept(entry, reason))
                self._record(entry, reason)
        if swept:
            log.warning("%d stale whole-slide upload(s) swept", len(swept))
        return swept

    def _written_before(self, cutoff: float) -> Iterator[Path]:
        for folder in SWEPT_FOLDERS:
            try:
                entries = list((self.root / folder).iterdir())
            except FileNotFoundError:
                continue
            for entry in entries:
                written = _last_written(entry)
                if written is not None and written < cutoff:
                    yield entry

    def _reason(self, entry: Path) -> SweepReason | None:
        states = self.store.upload_states(entry)
        if not states:
            return SweepReason.abandoned
        if any(state in ACTIVE for state in states) or self.keep_ended:
            return None
        return SweepReason.job_ended

    def _record(self, entry: Path, reason: SweepReason) -> None:
        log.info("whole-slide upload %s/%s swept (%s)", entry.parent.name, entry.name, reason)
        if self.metrics is not None:
            self.metrics.wsi_uploads_swept.labels(reason.value).inc()
        if self.audit is not None:
            self.audit.record(
                actor="aidx-wsi-sweep",
                role="system",
                action="wsi.upload.sweep",
                resource=f"wsi-{entry.parent.name}/{entry.name}",
                outcome=reason.value,
            )


def _last_written(entry: Path) -> float | None:
    """When `entry` (a file, or a folder and the files in it) was last written; None
    if it went meanwhile."""
    try:
        written = entry.stat().st_mtime
        if entry.is_dir():
            with os.scandir(entry) as inside:
                written = max([written, *(item.stat().st_mtime for item in inside)])
        return written
    except FileNotFoundError:
        return None


def _remove(entry: Path) -> bool:
    """Delete `entry`; False if it was gone already (another replica swept it)."""
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    except FileNotFoundError:
        return False
    return True
