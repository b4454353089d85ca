"""Everything the routes use, built once by the app factory and handed to each route
as a typed dependency (`Depends(services)`), instead of untyped `app.state` lookups."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine

from aidx.adapters.analysis import ActingAs, Actor, AnalysisStep, ReportRecorder, report_created
from aidx.adapters.feedback import Feedback
from aidx.adapters.labs_service import LabsService
from aidx.adapters.writeback import Writeback, destinations_from
from aidx.adapters.wsi_dicom import DicomSlides
from aidx.inference.agreement_metrics import FeedbackCollector
from aidx.inference.audit import AuditLog
from aidx.inference.cpu_stage import CpuStage
from aidx.inference.drift_monitor import DriftCollector, DriftMonitor
from aidx.inference.drift_store import DriftStore
from aidx.inference.feedback import FeedbackStore
from aidx.inference.files import private_folder
from aidx.inference.metrics import OutboxCollector, ServiceMetrics
from aidx.inference.report_index import ReportIndex
from aidx.inference.reports import Report, ReportStore
from aidx.inference.repository import ModelEntry
from aidx.inference.serving import ModelService
from aidx.inference.settings import Settings
from aidx.inference.settings_sections import UploadRetention
from aidx.inference.shadow_store import ShadowCollector, ShadowStore
from aidx.inference.store import create_store
from aidx.integrations.dicom.pull import DicomwebPuller, puller_from
from aidx.integrations.dicom.scp import StoreScp, scp_from
from aidx.pipelines.ct.pipeline import CtPipeline
from aidx.pipelines.ct.report import CtReport
from aidx.pipelines.cxr.pipeline import CxrPipeline
from aidx.pipelines.wsi.deepzoom import DeepZoomSlides
from aidx.pipelines.wsi.job_runner import JobRunner
from aidx.pipelines.wsi.job_store import JobStore
from aidx.pipelines.wsi.upload_sweep import UploadSweeper
from aidx.service.access import AccessGate
from aidx.service.auth import KeyRing, keyring_for
from aidx.service.sessions import SessionStore
from aidx.service.shares import ShareStore, share_secret


@dataclass
class Services:
    settings: Settings
    db: Engine
    keyring: KeyRing
    access: AccessGate  # authentication throttled, refusals audited, the STAT policy
    metrics: ServiceMetrics
    models: ModelService
    shadows: ShadowStore  # shadow versions' comparisons with the serving versions
    reports: ReportStore
    audit: AuditLog
    cpu: CpuStage
    cxr_pipeline: CxrPipeline  # also renders overlays on first use
    cxr: AnalysisStep[bytes, Report]
    ct: AnalysisStep[Sequence[bytes], CtReport]
    writeback: Writeback
    dicom_scp: StoreScp | None
    labs: LabsService
    wsi_jobs: JobRunner
    deepzoom: DeepZoomSlides  # the slide viewer's open slides
    dicom_slides: DicomSlides  # DICOM WSI series (pulled, or by C-STORE) to wsi_jobs
    feedback: Feedback  # clinicians' answers on findings
    report_index: ReportIndex  # the review worklist's index of reports
    sessions: SessionStore  # the review workspace's sign-ins
    shares: ShareStore  # read-only links to one report (QR codes)
    drift: DriftMonitor  # what each model sees and says, against its reference

    def puller(self, actor: Actor, received_at: float | None = None) -> DicomwebPuller:
        """A DICOMweb puller whose reports are made (and audited) on `actor`'s behalf;
        `received_at`: when the pull was asked for (POSIX seconds)."""
        intake = {
            "cxr": ActingAs(self.cxr, actor, received_at),
            "ct": ActingAs(self.ct, actor, received_at),
        }
        return puller_from(self.settings.pacs, self.settings.dicom, intake)


def build_services(settings: Settings, wsi_links: Callable[[str], dict[str, str]]) -> Services:
    metrics = ServiceMetrics()
    private_folder(settings.var_dir)  # 0700: what an older run left is closed too
    db = create_store(settings.store_url)
    shadows = ShadowStore(db)  # comparisons of shadow versions with the serving ones
    models = ModelService(
        settings, observer=metrics, shadow_record=shadows.add, shadow_observer=metrics
    )
    report_index = ReportIndex(db)
    reports = ReportStore(
        settings.reports_dir, on_save=report_index.put, on_new=metrics.report_made
    )
    audit = AuditLog(settings.audit_log)
    cpu = CpuStage(settings.cpu.workers or os.cpu_count() or 1)
    writeback = _writeback(settings, db, reports, audit, cpu, metrics)
    metrics.registry.register(OutboxCollector(writeback.store.counts))
    metrics.registry.register(FeedbackCollector(db))  # agreement, with its counts
    drift = DriftMonitor(DriftStore(db), settings.drift, lambda: _entries(models))
    metrics.registry.register(DriftCollector(drift))
    metrics.registry.register(ShadowCollector(shadows))
    # every CXR and CT report goes to the outbox before it is answered
    recorder = ReportRecorder[Report](reports, writeback if settings.writeback else None)
    cxr_pipeline = CxrPipeline(models, reports, cpu, settings.ood_policy, settings.image)
    ct_pipeline = CtPipeline(models, reports, cpu, settings.ood_policy, settings.image)
    observe = metrics.observe_turnaround
    cxr = AnalysisStep(
        cxr_pipeline, audit, recorder=recorder, audited=report_created, observe=observe,
        watch=drift.watch,
    )  # fmt: skip
    ct = AnalysisStep(
        ct_pipeline, audit, recorder=recorder, audited=report_created, observe=observe,
        watch=drift.watch,
    )  # fmt: skip
    labs = LabsService(models, db, audit, settings.labs, observe=observe, drift=drift)
    wsi = settings.wsi
    wsi_jobs = JobRunner(
        JobStore(db), models, reports, max_running=wsi.max_running_jobs, readers=wsi.readers,
        links=wsi_links, heartbeat_s=wsi.job_heartbeat_s, stale_s=wsi.job_stale_s,
        on_report=writeback.submit_slide if settings.writeback else None,
        sweeper=_upload_sweeper(settings, JobStore(db), audit, metrics),
        observe=metrics.observe_turnaround, watch=drift.watch,
    )  # fmt: skip
    keyring = keyring_for(settings)
    sessions = SessionStore(db, settings.ui.session_ttl_s)
    scp_actor = Actor(f"scp:{settings.dicom.ae_title}", "intake")
    dicom_slides = DicomSlides(settings, wsi_jobs, audit)
    intake = {"cxr": ActingAs(cxr, scp_actor), "ct": ActingAs(ct, scp_actor), "wsi": dicom_slides}
    return Services(
        settings=settings, db=db, keyring=keyring,
        access=AccessGate(keyring, audit, settings.access, sessions), metrics=metrics,
        models=models, shadows=shadows, reports=reports, audit=audit, cpu=cpu,
        cxr_pipeline=cxr_pipeline,
        cxr=cxr, ct=ct, writeback=writeback,
        dicom_scp=scp_from(settings.dicom, settings.var_dir, intake),
        labs=labs, wsi_jobs=wsi_jobs, dicom_slides=dicom_slides,
        deepzoom=DeepZoomSlides(tile_cache_bytes=wsi.deepzoom_cache_bytes),
        feedback=Feedback(FeedbackStore(db), reports, labs.store, report_index),
        report_index=report_index, sessions=sessions, drift=drift,
        shares=ShareStore(db, share_secret(settings.ui.share_secret, settings.var_dir)),
    )  # fmt: skip


def _upload_sweeper(
    settings: Settings, store: JobStore, audit: AuditLog, metrics: ServiceMetrics
) -> UploadSweeper:
    wsi = settings.wsi
    return UploadSweeper(
        store, settings.var_dir, stale_s=wsi.upload_stale_s, every_s=wsi.upload_sweep_s,
        keep_ended=wsi.upload_retention is UploadRetention.keep, audit=audit, metrics=metrics,
    )  # fmt: skip


def _entries(models: ModelService) -> dict[str, ModelEntry]:
    return {name: served.entry for name, served in models.models.items()}


def _writeback(
    settings: Settings,
    db: Engine,
    reports: ReportStore,
    audit: AuditLog,
    cpu: CpuStage,
    metrics: ServiceMetrics,
) -> Writeback:
    """The outbox and its destinations, each integration from its own section."""
    destinations = destinations_from(
        settings.pacs, settings.fhir, settings.emr,
        calling_ae=settings.dicom.ae_title, sink_root=settings.outbox_dir,
    )  # fmt: skip
    return Writeback(
        settings.outbox, destinations, db, reports,
        fhir=settings.fhir, emr=settings.emr, audit=audit, cpu=cpu,
        observe=metrics.observe_turnaround,
    )  # fmt: skip


async def services(request: Request) -> Services:
    """The app's services, as a typed FastAPI dependency (async: no worker-thread hop)."""
    found: Services = request.app.state.services
    return found
