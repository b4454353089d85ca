"""The app factory. Nothing heavy happens at import; the lifespan loads the models."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aidx.inference.metrics import ServiceMetrics
from aidx.inference.settings import Settings
from aidx.inference.store import init_store
from aidx.service.container import Services, build_services
from aidx.service.grpc_server import GrpcServer
from aidx.service.handlers import install_error_handlers
from aidx.service.limits import RequestLimits
from aidx.service.routes import (
    ct,
    cxr,
    deepzoom,
    feedback,
    health,
    labs,
    models,
    outbox,
    reports,
    shadow,
    share,
    studies,
    ui,
    v2,
    viewer,
    worklist,
    wsi,
)
from aidx.service.security_headers import SecurityHeaders

log = logging.getLogger(__name__)


class RequestCounter:
    """Counts responses by route template and status (a plain ASGI middleware:
    Starlette's BaseHTTPMiddleware costs too much per request on the hot /v2 path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._counters: dict[tuple[str, int], Counter] = {}  # labels() per request costs

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
            self._counter(getattr(scope.get("route"), "path", "unmatched"), status["code"]).inc()

    def _counter(self, path: str, status: int) -> Counter:
        key = (path, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(path, str(status))
        return counter


def create_app(settings: Settings | None = None) -> FastAPI:
    services = build_services(settings or Settings(), wsi_links=wsi.job_links)
    app = FastAPI(
        title="aidx",
        version="0.1.0",
        lifespan=lambda app: _lifespan(services),
        description="AI diagnostic assist. Demo weights are not for clinical use.",
        # aidx's metrics are Prometheus' (/metrics); FastAPI's OpenTelemetry hooks would
        # only ask, on every request, whether a provider has been configured
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    install_error_handlers(app)
    # routes are matched in order: the hot ones (/v2 infer, slide viewer tiles) come first
    v2.add_infer_routes(app)
    routers = (v2.router, health.router, models.router, deepzoom.router, cxr.router)
    for router in (*routers, reports.router, wsi.router, labs.router, outbox.router, ct.router):
        app.include_router(router)
    app.include_router(studies.router)
    app.include_router(feedback.router)
    app.include_router(worklist.router)
    app.include_router(share.router)
    app.include_router(viewer.router)
    app.include_router(shadow.router)
    ui.mount_workspace(app)
    # auth before any body, body sizes and timeouts; inside the counter, which counts its refusals
    app.add_middleware(RequestLimits, settings=services.settings, access=services.access)
    app.add_middleware(SecurityHeaders)  # its headers also on the limits' refusals
    app.add_middleware(RequestCounter, metrics=services.metrics)
    return app


@asynccontextmanager
async def _lifespan(s: Services) -> AsyncIterator[None]:
    init_store(s.db)
    if s.report_index.is_empty():  # reports saved before the worklist's index existed
        s.report_index.backfill(s.reports.every())
    s.wsi_jobs.start()  # jobs a previous process left running: failed
    await s.models.start()
    s.cpu.start()
    for served in s.models.models.values():
        s.metrics.register_model(served.name, served.state == "ready")
    await s.labs.start()  # the MLLP listener, when a port is configured
    s.writeback.start()  # the outbox worker: delivers what earlier runs left
    if s.dicom_scp is not None:
        s.dicom_scp.start()  # C-STORE intake; studies left on disk resume
    # Start-up objects (torch, pydicom, models) live as long as the process: keep
    # them out of the collector's full passes, which otherwise stall requests.
    gc.freeze()
    kserve_grpc = GrpcServer(s)  # KServe v2 over gRPC beside uvicorn (AIDX_GRPC_PORT)
    await kserve_grpc.start()
    yield
    await kserve_grpc.stop()
    if s.dicom_scp is not None:
        await s.dicom_scp.stop()
    await s.writeback.stop(s.settings.shutdown_timeout_s)  # within the container's grace
    await s.labs.stop()
    await s.wsi_jobs.stop()
    await s.cpu.stop()
    await s.models.stop()
    s.db.dispose()
