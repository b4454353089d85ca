"""Whole-slide jobs run in the background (job_store.py records them).

A job survives its client's disconnect (it runs as its own task, not the request's).
Progress is written to the store at most every `PROGRESS_EVERY_S`. The runner keeps
this replica's jobs alive (`heartbeat_s`) and fails those of replicas that stopped
beating (`stale_s`): the protocol is described in job_store.py. An uploaded slide
is deleted once its job has ended, unless AIDX_WSI_UPLOAD_RETENTION=keep; what a
replica that died left behind is swept (upload_sweep.py) at start-up and periodically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aidx.inference.errors import AidxError
from aidx.inference.reports import Report, ReportStore, Turnaround
from aidx.inference.serving import ModelService
from aidx.inference.settings_sections import UploadRetention
from aidx.pipelines.wsi.analysis import AnalysisParams, tile_model
from aidx.pipelines.wsi.intake import release_slide
from aidx.pipelines.wsi.job_store import ACTIVE, INTERRUPTED, Job, JobState, JobStore
from aidx.pipelines.wsi.pipeline import SlideInput, WsiPipeline
from aidx.pipelines.wsi.slide import check_request_mpp, describe
from aidx.pipelines.wsi.upload_sweep import UploadSweeper

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.5
# (pipeline, stage, seconds): the service's turnaround histogram (adapters/turnaround.py)
ObserveTurnaround = Callable[[str, str, float], None]


def _now() -> datetime:
    return datetime.now(UTC)


class JobRunner:
    """Runs jobs as asyncio tasks, at most `max_running` at a time, and keeps their
    heartbeat. `heartbeat_s` and `stale_s` default to the service's settings
    (AIDX_WSI_JOB_HEARTBEAT_S, AIDX_WSI_JOB_STALE_S). `on_report` is given each saved
    report and its slide before the job succeeds (the service queues the write-back);
    `observe` is told each report's received-to-analysed seconds; `watch` is given each
    saved report (drift monitoring). `sweeper`, if given, runs at start-up (once stale
    jobs are failed) and every `sweeper.every_s`."""

    def __init__(
        self,
        store: JobStore,
        models: ModelService,
        reports: ReportStore,
        *,
        max_running: int = 1,
        readers: int = 0,
        links: Callable[[str], dict[str, str]] | None = None,
        heartbeat_s: float | None = None,
        stale_s: float | None = None,
        on_report: Callable[[Report, Path], Awaitable[object]] | None = None,
        sweeper: UploadSweeper | None = None,
        observe: ObserveTurnaround | None = None,
        watch: Callable[[Report], None] | None = None,
    ) -> None:
        wsi = models.settings.wsi
        self.heartbeat_s = heartbeat_s or wsi.job_heartbeat_s
        self.stale_s = stale_s or wsi.job_stale_s
        self.keep_uploads = wsi.upload_retention is UploadRetention.keep
        self.store = store
        self.models = models
        self.pipeline = WsiPipeline(models)
        self.reports = reports
        self.readers = readers
        self.links = links
        self.on_report = on_report
        self.observe = observe
        self.watch = watch  # drift monitoring: DriftMonitor.watch
        self._slots = asyncio.Semaphore(max_running)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_requested: set[str] = set()
        self.sweeper = sweeper
        self._background: list[asyncio.Task[None]] = []

    def start(self) -> int:
        """Fail the jobs that lost their replica, then keep this replica's alive
        (called from the running event loop, at start-up)."""
        interrupted = self.store.fail_stale(self.stale_s)
        if interrupted:
            log.warning("%d whole-slide job(s) lost their replica: interrupted", interrupted)
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self._keep_alive(), name="wsi-job-heartbeat")]
        if self.sweeper is not None:
            sweeping = loop.create_task(self._sweep(self.sweeper), name="wsi-upload-sweep")
            self._background.append(sweeping)
        return interrupted

    async def _keep_alive(self) -> None:
        """Every heartbeat: refresh this replica's jobs first (so they are never stale
        here), then fail the jobs of replicas that stopped beating."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await asyncio.to_thread(self.store.heartbeat)
                lost = await asyncio.to_thread(self.store.fail_stale, self.stale_s)
            except Exception as exc:  # the database may be away for a moment: next beat
                log.warning("whole-slide job heartbeat failed: %s", type(exc).__name__)
                continue
            if lost:
                log.warning("%d whole-slide job(s) lost their replica: interrupted", lost)

    @staticmethod
    async def _sweep(sweeper: UploadSweeper) -> None:
        while True:
            try:
                await asyncio.to_thread(sweeper.sweep)
            except Exception as exc:  # the database or the disk, for a moment: next time
                log.warning("whole-slide upload sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(sweeper.every_s)

    async def submit_slide(
        self,
        path: Path,
        *,
        uploaded: bool,
        mpp: float | None,
        params: dict[str, Any],
        submitted_by: str,
        mpp_override: bool = False,
        received_at: float | None = None,
    ) -> Job:
        """Check the slide (a tile model is served, OpenSlide opens it, it has an MPP that
        the request's does not contradict), record its job and start it. `uploaded`:
        aidx's own copy, removed once the job has ended. `received_at`: when the slide
        was received (POSIX seconds; default: now)."""
        tile_model(self.models)  # 503 now rather than a failed job
        info = await asyncio.to_thread(describe, path, mpp)
        check_request_mpp(info, override=mpp_override)
        job = await asyncio.to_thread(
            self.store.create, slide_path=path, uploaded=uploaded, mpp=mpp,
            slide=info.summary(), params=params, submitted_by=submitted_by,
            received_at_s=received_at,
        )  # fmt: skip
        self.submit(job)
        return job

    def submit(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job.id), name=f"wsi-job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _task: self._tasks.pop(job.id, None))

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; the store and the disk are reached from
        worker threads (deleting a large upload takes a while)."""
        job = await asyncio.to_thread(self.store.get, job_id)
        if job.state in ACTIVE:
            self._cancel_requested.add(job_id)
            await asyncio.to_thread(
                self.store.update,
                job_id,
                only_if=ACTIVE,
                state=JobState.cancelled,
                finished_at=_now(),
                error_code="cancelled",
                error_message="cancelled on request",
            )
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()  # its end releases the upload
            else:  # queued by a process that has since stopped, or ended meanwhile
                self._cancel_requested.discard(job_id)
                await asyncio.to_thread(self._release_upload, job_id)
        return await asyncio.to_thread(self.store.get, job_id)

    async def stop(self) -> None:
        """Stop running jobs; they are recorded as interrupted, not lost."""
        for background in self._background:
            background.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, job_id: str) -> None:
        try:
            async with self._slots:
                await self._analyse(job_id)
        except asyncio.CancelledError:
            if job_id not in self._cancel_requested:
                await asyncio.to_thread(
                    self.store.update,
                    job_id,
                    only_if=ACTIVE,
                    state=JobState.failed,
                    finished_at=_now(),
                    error_code="interrupted",
                    error_message=INTERRUPTED,
                )
            raise
        except AidxError as exc:
            await self._fail(job_id, exc.code, exc.message)
        except Exception as exc:  # a bug: the job fails with a stable code, the log has it
            log.exception("whole-slide job %s failed", job_id)
            await self._fail(job_id, "internal_error", f"internal error ({type(exc).__name__})")
        finally:
            self._cancel_requested.discard(job_id)
            await asyncio.to_thread(self._release_upload, job_id)

    def _release_upload(self, job_id: str) -> None:
        """The retention rule for uploads: an ended job's uploaded slide is deleted
        (its report, heatmap and regions stay). Never a slide under a slide root."""
        if self.keep_uploads:
            return
        try:
            job = self.store.get(job_id)
            if job.uploaded and job.state not in ACTIVE:
                release_slide(job.slide_path)
        except Exception as exc:  # the next job must not fail for it; the log says
            log.warning("whole-slide job %s: upload not deleted (%s)", job_id, type(exc).__name__)

    async def _fail(self, job_id: str, code: str, message: str) -> None:
        await asyncio.to_thread(
            self.store.update,
            job_id,
            only_if=ACTIVE,
            state=JobState.failed,
            finished_at=_now(),
            error_code=code,
            error_message=message,
        )

    async def _record(self, report: Report, files: dict[str, bytes], slide_path: Path) -> None:
        """Save the report, then hand it to `on_report` (the write-back)."""
        await asyncio.to_thread(self.reports.save, report, files)
        if self.on_report is not None:
            await self.on_report(report, slide_path)
        if self.watch is not None:
            await asyncio.to_thread(self._watched, report)

    def _watched(self, report: Report) -> None:
        """Monitoring never fails a job: a store that refuses the row is logged."""
        assert self.watch is not None
        try:
            self.watch(report)
        except Exception:
            log.exception("wsi: the drift observation was not kept")

    async def _analyse(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job.state is not JobState.queued:
            return
        await asyncio.to_thread(
            self.store.update,
            job_id,
            only_if=ACTIVE,
            state=JobState.running,
            started_at=_now(),
            heartbeat_at=_now(),
        )
        # the site's OOD policy, never the request's
        policy = self.models.settings.ood_policy
        params = AnalysisParams(**job.params, readers=self.readers, ood_policy=policy)
        last = {"at": 0.0, "writing": False, "t0": time.perf_counter()}

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            if done == 0:
                last["t0"] = now  # tiles start streaming: the rate counts from here
            elif done < total and now - last["at"] < PROGRESS_EVERY_S:
                return
            if last["writing"]:
                return
            last["at"] = now
            elapsed = now - last["t0"]
            rate = done / elapsed if done and elapsed > 0 else None
            last["writing"] = True

            def write() -> None:
                try:
                    self.store.update(
                        job_id,
                        only_if=(JobState.running,),
                        tiles_total=total,
                        tiles_done=done,
                        rate_tiles_s=rate,
                    )
                finally:
                    last["writing"] = False

            asyncio.get_running_loop().run_in_executor(None, write)

        links = self.links(job_id) if self.links else None
        slide = SlideInput(Path(job.slide_path), job.mpp, params, progress, links)
        done = await self.pipeline.analyze(slide)
        report, result = done.report, done.analysis
        analysed_s = time.time()
        report.turnaround = Turnaround.between(job.received_s, analysed_s)
        if self.observe is not None:
            self.observe(report.pipeline, "analysed", analysed_s - job.received_s)
        await self._record(report, done.files, slide.path)
        await asyncio.to_thread(
            self.store.update,
            job_id,
            only_if=(JobState.running,),
            state=JobState.succeeded,
            finished_at=_now(),
            tiles_total=result.tally.total,
            tiles_done=result.tally.done,
            rate_tiles_s=result.tally.done / result.stream_s if result.stream_s > 0 else None,
            report_id=report.id,
        )
