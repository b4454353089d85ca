"""The app factory. Nothing heavy happens at import; the lifespan loads the models."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aidx.inference.audit import AuditLog
from aidx.inference.auth import keyring_for
from aidx.inference.cpu_stage import CpuStage
from aidx.inference.handlers import install_error_handlers
from aidx.inference.metrics import OutboxCollector, ServiceMetrics
from aidx.inference.reports import ReportStore
from aidx.inference.routes import ct, cxr, health, labs, models, outbox, reports, studies, v2, wsi
from aidx.inference.serving import ModelService
from aidx.inference.settings import Settings
from aidx.inference.store import create_store, init_store
from aidx.integrations.dicom.scp import scp_from
from aidx.integrations.outbox.writeback import CtWritebackPipeline, Writeback, WritebackPipeline
from aidx.pipelines.ct.pipeline import CtPipeline
from aidx.pipelines.cxr.pipeline import CxrPipeline
from aidx.pipelines.labs.service import LabsService
from aidx.pipelines.wsi.jobs import JobRunner, JobStore

log = logging.getLogger(__name__)


class RequestCounter:
    """Counts responses by route template and status (a plain ASGI middleware:
    Starlette's BaseHTTPMiddleware costs too much per request on the hot /v2 path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, str(status["code"])).inc()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        init_store(app.state.db)
        app.state.wsi_jobs.start()  # jobs a previous process left running: failed
        await app.state.models.start()
        app.state.cpu.start()
        for served in app.state.models.models.values():
            metrics.register_model(served.name, served.state == "ready")
        await app.state.labs.start()  # the MLLP listener, when a port is configured
        app.state.writeback.start()  # the outbox worker: delivers what earlier runs left
        if app.state.dicom_scp is not None:
            app.state.dicom_scp.start()  # C-STORE intake; studies left on disk resume
        # Start-up objects (torch, pydicom, models) live as long as the process: keep
        # them out of the collector's full passes, which otherwise stall requests.
        gc.freeze()
        yield
        if app.state.dicom_scp is not None:
            await app.state.dicom_scp.stop()
        await app.state.writeback.stop()
        await app.state.labs.stop()
        await app.state.wsi_jobs.stop()
        await app.state.cpu.stop()
        await app.state.models.stop()
        app.state.db.dispose()

    app = FastAPI(
        title="aidx",
        version="0.1.0",
        lifespan=lifespan,
        description="AI diagnostic assist. Demo weights are not for clinical use.",
    )
    metrics = ServiceMetrics()
    service = ModelService(settings, observer=metrics)
    report_store = ReportStore(settings.reports_dir)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app.state.settings = settings
    app.state.db = create_store(settings.store_url)
    app.state.keyring = keyring_for(settings)
    app.state.metrics = metrics
    app.state.models = service
    app.state.reports = report_store
    app.state.audit = AuditLog(settings.audit_log)
    app.state.cpu = CpuStage(settings.cpu_workers or os.cpu_count() or 1)
    app.state.cxr = CxrPipeline(service, report_store, app.state.cpu)
    app.state.ct = CtPipeline(service, report_store, app.state.cpu)
    app.state.writeback = Writeback(
        settings, app.state.db, report_store, app.state.audit, cpu=app.state.cpu
    )
    metrics.registry.register(OutboxCollector(app.state.writeback.store.counts))
    if settings.writeback:  # every CXR and CT report goes to the outbox before it is answered
        app.state.cxr = WritebackPipeline(app.state.cxr, app.state.writeback)
        app.state.ct = CtWritebackPipeline(app.state.ct, app.state.writeback)
    app.state.dicom_scp = scp_from(settings, {"cxr": app.state.cxr, "ct": app.state.ct})
    app.state.labs = LabsService(
        service, app.state.db, app.state.audit,
        catalogue=settings.labs_catalogue, mllp_port=settings.labs_mllp_port,
    )  # fmt: skip
    app.state.wsi_jobs = JobRunner(
        JobStore(app.state.db),
        service,
        report_store,
        max_running=settings.wsi_max_running_jobs,
        readers=settings.wsi_readers,
        links=wsi.job_links,
    )

    install_error_handlers(app)
    routers = (health.router, models.router, v2.router, cxr.router, reports.router, wsi.router)
    for router in (*routers, labs.router, outbox.router, ct.router, studies.router):
        app.include_router(router)

    app.add_middleware(RequestCounter, metrics=metrics)
    return app
