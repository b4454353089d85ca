"""POST /v1/cxr: a chest radiograph as DICOM in, a Report out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request

from aidx.inference.auth import Principal, require
from aidx.inference.reports import Report
from aidx.inference.routes.analysis import audited_analysis, request_priority, request_timeout_s
from aidx.inference.settings import Role
from aidx.inference.uploads import read_body, require_media_type

router = APIRouter(prefix="/v1")


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
    cxr = request.app.state.cxr
    report: Report = await audited_analysis(
        request, who, "cxr.analyze",
        lambda: cxr.analyze(data, priority=priority, timeout_s=timeout_s),
    )  # fmt: skip
    return report
