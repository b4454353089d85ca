"""POST /v1/cxr: a chest radiograph as DICOM in, a Report out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request

from aidx.inference.reports import Report
from aidx.inference.settings import Role
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import ANALYSIS, AUTHED
from aidx.service.routes.analysis import (
    actor,
    allowed_priority,
    received_at,
    request_timeout_s,
)
from aidx.service.uploads import read_body, require_media_type

router = APIRouter(prefix="/v1", responses=AUTHED)


@router.post("/cxr", response_model=Report, responses=ANALYSIS)
async def analyze_cxr(
    request: Request,
    received_s: float = Depends(received_at),
    who: Principal = Depends(require(Role.radiologist)),
    x_aidx_priority: str | None = Header(default=None),
    x_aidx_deadline_ms: int | None = Header(default=None),
    svc: Services = Depends(services),
) -> Report:
    require_media_type(request, "application/dicom")
    priority = allowed_priority(request, who, svc, x_aidx_priority)
    timeout_s = request_timeout_s(x_aidx_deadline_ms)
    data = await read_body(request, svc.settings.max_upload_bytes)
    return await svc.cxr.run(
        data, actor(who), priority=priority, timeout_s=timeout_s, received_at=received_s
    )
