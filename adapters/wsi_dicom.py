"""Whole slides that are DICOM WSI series, into the same whole-slide jobs as TIFF slides:

- from the PACS by Study and Series Instance UID (POST /v1/wsi/dicom): pulled over
  DICOMweb into a folder of their own (integrations/dicom/wsi_pull.py);
- by C-STORE (the intake's routing rule for modality SM): once the study is stable,
  the series' files are linked into such a folder (the intake then drops its own).

Either way the series is checked on its headers first (integrations/dicom/
wsi_series.py), then OpenSlide opens it (vendor `dicom`) and the job runs as for any
slide; its regions go back to the slide's study as an ANN through the outbox (the
job runner's `on_report`). The folder is removed once the job has ended.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom

from aidx.inference.audit import AuditLog
from aidx.inference.errors import PayloadTooLarge
from aidx.inference.settings import Settings
from aidx.integrations.dicom.wsi_pull import PulledSlide, WsiPuller
from aidx.integrations.dicom.wsi_series import check_wsi_series
from aidx.pipelines.wsi.intake import series_folder
from aidx.pipelines.wsi.job_runner import JobRunner
from aidx.pipelines.wsi.job_store import Job

DEFAULT_MIN_TISSUE_FRACTION = 0.25


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no second copy of a multi-GB file) where the file system allows."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _gather(paths: Sequence[Path], folder: Path, max_instances: int, max_bytes: int) -> Path:
    """Check the received series' size and headers and link its files into `folder`;
    the level-0 file there."""
    size = sum(p.stat().st_size for p in paths)
    if size > max_bytes:
        raise PayloadTooLarge(
            f"the slide exceeds the limit of {max_bytes} bytes (AIDX_WSI_DICOM_MAX_BYTES)",
            code="slide_too_large",
            limit_bytes=max_bytes,
        )
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    level0 = check_wsi_series(headers, max_instances=max_instances)
    for path, ds in zip(paths, headers, strict=True):
        _link_or_copy(path, folder / f"{ds.SOPInstanceUID}.dcm")
    return folder / f"{level0.SOPInstanceUID}.dcm"


class DicomSlides:
    """DICOM WSI series to whole-slide jobs (see the module's docstring)."""

    def __init__(self, settings: Settings, runner: JobRunner, audit: AuditLog) -> None:
        self.var_dir = settings.var_dir
        self.wsi = settings.wsi
        self.pacs = settings.pacs
        self.runner = runner
        self.audit = audit
        self.intake_actor = f"scp:{settings.dicom.ae_title}"

    def params(
        self, max_regions: int | None = None, min_tissue_fraction: float | None = None
    ) -> dict[str, Any]:
        return {
            "max_regions": max_regions or self.wsi.max_regions,
            "min_tissue_fraction": DEFAULT_MIN_TISSUE_FRACTION
            if min_tissue_fraction is None
            else min_tissue_fraction,
        }

    def puller(self) -> WsiPuller:
        from aidx.integrations.dicom.pull import PullUnavailable

        if not self.pacs.dicomweb_url:
            raise PullUnavailable(
                "no PACS is configured for DICOMweb (AIDX_PACS_DICOMWEB_URL)",
                code="pacs_not_configured",
            )
        return WsiPuller(
            self.pacs, max_bytes=self.wsi.dicom_max_bytes,
            max_instances=self.wsi.dicom_max_instances,
        )  # fmt: skip

    async def pull(
        self,
        study_uid: str,
        series_uid: str,
        *,
        params: dict[str, Any],
        submitted_by: str,
        received_at: float | None = None,
    ) -> tuple[Job, PulledSlide]:
        """Pull the series from the PACS and start its job; `received_at` (POSIX
        seconds): when the pull was asked for, the start of its turnaround."""
        puller = self.puller()
        folder = await asyncio.to_thread(series_folder, self.var_dir)
        try:
            pulled = await puller.pull(study_uid, series_uid, folder)
            job = await self.runner.submit_slide(
                pulled.level0, uploaded=True, mpp=None, params=params,
                submitted_by=submitted_by, received_at=received_at,
            )  # fmt: skip
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return job, pulled

    async def analyze(self, paths: Sequence[Path], received_at: float | None = None) -> Job:
        """A series received by C-STORE (its files, in the intake's folder): checked,
        linked into a folder of its own, its job started. A refusal is an AidxError
        the intake quarantines the files for. `received_at`: the first instance's
        arrival (POSIX seconds), the start of the report's turnaround."""
        actor = self.intake_actor
        with self.audit.access(actor=actor, role="intake", action="wsi.submit", resource="series"):
            folder = await asyncio.to_thread(series_folder, self.var_dir)
            try:
                level0 = await asyncio.to_thread(
                    _gather,
                    paths,
                    folder,
                    self.wsi.dicom_max_instances,
                    self.wsi.dicom_max_bytes,
                )
                return await self.runner.submit_slide(
                    level0, uploaded=True, mpp=None, params=self.params(),
                    submitted_by=actor, received_at=received_at,
                )  # fmt: skip
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, folder, True)
                raise
