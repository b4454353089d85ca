"""Reports and their evidence. Reading one is an access to patient data: audited."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from aidx.inference.auth import Principal, require
from aidx.inference.errors import NotFound
from aidx.inference.reports import Report
from aidx.inference.settings import Role

router = APIRouter(prefix="/v1/reports")
readers = require(Role.radiologist, Role.pathologist, Role.lab)


def _access(request: Request, who: Principal, action: str, rid: str):  # type: ignore[no-untyped-def]
    return request.app.state.audit.access(
        actor=who.name, role=who.role.value, action=action, resource=f"report/{rid}"
    )


@router.get("/{rid}", response_model=Report)
async def get_report(rid: str, request: Request, who: Principal = Depends(readers)) -> Report:
    with _access(request, who, "report.read", rid):
        report: Report = request.app.state.reports.load(rid)
    return report


@router.get("/{rid}/overlay.png")
async def get_overlay(
    rid: str, request: Request, who: Principal = Depends(readers)
) -> FileResponse:
    with _access(request, who, "report.overlay", rid):
        path = await _overlay(request, rid)
    return FileResponse(path, media_type="image/png")


async def _overlay(request: Request, rid: str) -> Path:
    try:  # a WSI heatmap, or a CXR overlay already rendered (older reports: at analysis)
        path: Path = request.app.state.reports.file(rid, "overlay.png")
    except NotFound:  # a CXR overlay not rendered yet: from its saved inputs, off the loop
        path = await request.app.state.cxr.overlay_file(rid)
    return path
