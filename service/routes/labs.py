"""Lab screening for lab technicians:

POST /v1/labs/screen                 JSON, FHIR R4 Bundle or HL7 v2 ORU^R01 in;
                                     JSON (default), FHIR Bundle or ORU^R01 out (Accept)
GET  /v1/labs/alerts                 alerts (open by default), oldest first
GET  /v1/labs/alerts/stream          Server-Sent Events, one `alert` event per new alert
GET  /v1/labs/alerts/{id}            one alert with its evidence
POST /v1/labs/alerts/{id}/ack        acknowledge with a reason
GET  /v1/labs/catalogue              the analyte catalogue in force
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from aidx.adapters.labs_hl7 import build_oru, parse_oru
from aidx.adapters.labs_service import LabsService
from aidx.inference.errors import BadRequest
from aidx.inference.reports import DEMO_DISCLAIMER
from aidx.inference.settings import Role
from aidx.pipelines.labs.catalogue import Catalogue
from aidx.pipelines.labs.fhir import parse_bundle, to_bundle
from aidx.pipelines.labs.store import Alert
from aidx.pipelines.labs.types import ScreenRequest, ScreenResponse, SpecimenIn
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import ANALYSIS, AUTHED, errors
from aidx.service.routes.analysis import (
    actor,
    allowed_priority,
    received_at,
    request_timeout_s,
)
from aidx.service.uploads import read_body, require_media_type

router = APIRouter(prefix="/v1/labs", responses=AUTHED)
JSON = "application/json"
FHIR = "application/fhir+json"
MAX_SEQ = 2**63 - 1  # alert sequence numbers are the store's signed 64-bit integers
HL7 = "x-application/hl7-v2+er7"


class AckRequest(BaseModel):
    reason: str = Field(min_length=3, max_length=1000)


class AlertList(BaseModel):
    alerts: list[Alert]
    next_after: int | None = None


def _labs(svc: Services) -> LabsService:
    labs: LabsService = svc.labs
    return labs


def _parse(media_type: str, body: bytes) -> list[SpecimenIn]:
    if media_type == HL7:
        return parse_oru(body).specimens
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None
    if media_type == FHIR or (isinstance(data, dict) and data.get("resourceType") == "Bundle"):
        if not isinstance(data, dict):
            raise BadRequest("a FHIR body must be a Bundle object", code="invalid_fhir")
        return parse_bundle(data)
    try:
        return ScreenRequest.model_validate(data).specimens
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadRequest(f"invalid screening request: {where}", code="invalid_request") from None


@router.post("/screen", response_model=ScreenResponse, responses=ANALYSIS)
async def screen(
    request: Request,
    received_s: float = Depends(received_at),
    who: Principal = Depends(require(Role.lab)),
    x_aidx_priority: str | None = Header(default=None),
    x_aidx_deadline_ms: int | None = Header(default=None),
    svc: Services = Depends(services),
) -> Any:
    require_media_type(request, JSON, FHIR, HL7)
    media_type = request.headers["content-type"].split(";")[0].strip().lower()
    priority = allowed_priority(request, who, svc, x_aidx_priority)
    timeout_s = request_timeout_s(x_aidx_deadline_ms)
    body = await read_body(request, svc.settings.max_upload_bytes)
    labs = _labs(svc)
    specimens = _parse(media_type, body)
    outcomes = await labs.step.run(
        specimens, actor(who), priority=priority, timeout_s=timeout_s, received_at=received_s
    )
    accept = request.headers.get("accept", "")
    if FHIR in accept:
        return Response(json.dumps(to_bundle(outcomes)), media_type=FHIR)
    if HL7 in accept:
        control = f"AIDX{outcomes[0].specimen_id}"[:20] if outcomes else "AIDX"
        return Response(build_oru(outcomes, control_id=control), media_type=HL7)
    demo = any(o.anomaly is not None and o.anomaly.model.demo_weights for o in outcomes)
    return ScreenResponse(
        catalogue_version=labs.catalogue.version,
        specimens=outcomes,
        disclaimer=DEMO_DISCLAIMER if demo else None,
    )


@router.get("/alerts", response_model=AlertList)
async def list_alerts(
    who: Principal = Depends(require(Role.lab)),
    state: str = Query(default="open", pattern="^(open|acknowledged|all)$"),
    after: int = Query(default=0, ge=0, le=MAX_SEQ),
    limit: int = Query(default=100, ge=1, le=1000),
    specimen_id: str | None = Query(default=None, max_length=128),
    svc: Services = Depends(services),
) -> AlertList:
    labs = _labs(svc)
    alerts = await asyncio.to_thread(
        labs.store.alerts,
        state=None if state == "all" else state,
        after_seq=after,
        limit=limit,
        specimen_id=specimen_id,
    )
    svc.audit.record(
        actor=who.name, role=who.role.value, action="labs.alerts.list",
        resource="labs/alerts", outcome="ok",
    )  # fmt: skip
    return AlertList(alerts=alerts, next_after=alerts[-1].seq if len(alerts) == limit else None)


def _event_seq(last_event_id: str | None) -> int | None:
    """The alert sequence a reconnecting client last saw; an id this service cannot
    have sent (not a number, or past the store's 64-bit range) is ignored: the stream
    starts with new alerts rather than failing."""
    given = last_event_id or ""
    if not given.isascii() or not given.isdigit() or len(given) > len(str(MAX_SEQ)):
        return None
    seq = int(given)
    return seq if seq <= MAX_SEQ else None


def _event(alert: Alert) -> str:
    return f"id: {alert.seq}\nevent: alert\ndata: {alert.model_dump_json()}\n\n"


@router.get("/alerts/stream")
async def stream_alerts(
    who: Principal = Depends(require(Role.lab)),
    last_event_id: str | None = Header(default=None),
    after_seq: int | None = Query(default=None, alias="after", ge=0, le=MAX_SEQ),
    svc: Services = Depends(services),
) -> StreamingResponse:
    """New alerts as Server-Sent Events. With Last-Event-ID (as EventSource sends on
    reconnecting), the alerts stored since that event are replayed first; `after` does
    the same for a first connection (a browser's EventSource cannot set the header),
    so that a console that listed the open alerts misses none before it subscribed."""
    labs = _labs(svc)
    limits = svc.settings.labs  # keep-alive, stream length (then the client reconnects), replay
    after = _event_seq(last_event_id) if last_event_id is not None else after_seq
    svc.audit.record(
        actor=who.name, role=who.role.value, action="labs.alerts.stream",
        resource="labs/alerts", outcome="ok",
    )  # fmt: skip

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + limits.stream_max_s
        async with labs.hub.subscribe() as queue:  # subscribe first: no gap
            sent = 0
            yield "retry: 1000\n: connected\n\n"
            if after is not None:
                replay = await asyncio.to_thread(
                    labs.store.alerts, state=None, after_seq=after, limit=limits.stream_replay_max
                )
                for alert in replay:
                    sent = alert.seq
                    yield _event(alert)
            while (left := ends - loop.time()) > 0:
                try:
                    alert = await asyncio.wait_for(
                        queue.get(), min(limits.stream_keepalive_s, left)
                    )
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if alert is None:  # lagged, or the service is stopping
                    yield "event: reconnect\ndata: {}\n\n"
                    return
                if alert.seq > sent:
                    sent = alert.seq
                    yield _event(alert)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/alerts/{alert_id}", response_model=Alert, responses=errors(404))
async def get_alert(
    alert_id: str,
    who: Principal = Depends(require(Role.lab)),
    svc: Services = Depends(services),
) -> Alert:
    audit = svc.audit
    with audit.access(
        actor=who.name, role=who.role.value, action="labs.alert.read", resource=f"alert/{alert_id}"
    ):
        alert: Alert = await asyncio.to_thread(_labs(svc).store.alert, alert_id)
    return alert


@router.post("/alerts/{alert_id}/ack", response_model=Alert, responses=errors(400, 404, 409))
async def acknowledge_alert(
    alert_id: str,
    body: AckRequest,
    who: Principal = Depends(require(Role.lab)),
    svc: Services = Depends(services),
) -> Alert:
    audit = svc.audit
    with audit.access(
        actor=who.name, role=who.role.value, action="labs.alert.ack", resource=f"alert/{alert_id}"
    ):
        alert: Alert = await asyncio.to_thread(
            _labs(svc).store.acknowledge, alert_id, by=who.name, reason=body.reason
        )
    return alert


@router.get("/catalogue", response_model=Catalogue)
async def catalogue(
    _: Principal = Depends(require(Role.lab)), svc: Services = Depends(services)
) -> Catalogue:
    return _labs(svc).catalogue
