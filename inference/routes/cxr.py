"""POST /v1/cxr: a chest radiograph as DICOM in, a Report out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request

from aidx.inference.auth import Principal, require
from aidx.inference.errors import BadRequest
from aidx.inference.reports import Report
from aidx.inference.settings import Role
from aidx.inference.uploads import read_body, require_media_type

router = APIRouter(prefix="/v1")
PRIORITIES = {"stat": 1, "routine": 2}


def request_priority(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return PRIORITIES[value.strip().lower()]
    except KeyError:
        raise BadRequest(
            "X-Aidx-Priority must be 'stat' or 'routine'", code="invalid_priority"
        ) from None


def request_timeout_s(deadline_ms: int | None) -> float | None:
    if deadline_ms is None:
        return None
    if deadline_ms <= 0:
        raise BadRequest("X-Aidx-Deadline-Ms must be positive", code="invalid_deadline")
    return deadline_ms / 1000


@router.post("/cxr", response_model=Report)
async def analyze_cxr(
    request: Request,
    who: Principal = Depends(require(Role.radiologist)),
    x_aidx_priority: str | None = Header(default=None),
    x_aidx_deadline_ms: int | None = Header(default=None),
) -> Report:
    require_media_type(request, "application/dicom")
    priority = request_priority(x_aidx_priority)
    timeout_s = request_timeout_s(x_aidx_deadline_ms)
    data = await read_body(request, request.app.state.settings.max_upload_bytes)
    audit = request.app.state.audit
    with audit.access(actor=who.name, role=who.role.value, action="cxr.analyze", resource="upload"):
        report: Report = await request.app.state.cxr.analyze(
            data, priority=priority, timeout_s=timeout_s
        )
    audit.record(
        actor=who.name,
        role=who.role.value,
        action="report.create",
        resource=f"report/{report.id}",
        outcome="ok",
    )
    return report
