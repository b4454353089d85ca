"""Reports and their evidence. Reading one is an access to patient data: audited, and
answered to the roles of the report's kind only (service/access.py: a slide's report
to pathologists, a radiograph's or a CT's to radiologists)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse

from aidx.inference.errors import NotFound
from aidx.inference.reports import Report
from aidx.inference.settings import Role
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors, file_of

router = APIRouter(prefix="/v1/reports", responses={**AUTHED, **errors(404)})
readers = require(Role.radiologist, Role.pathologist, Role.lab)


def _access(svc: Services, who: Principal, action: str, rid: str):  # type: ignore[no-untyped-def]
    return svc.audit.access(
        actor=who.name, role=who.role.value, action=action, resource=f"report/{rid}"
    )


def readable_report(request: Request, svc: Services, who: Principal, rid: str) -> Report:
    """Report `rid`, if `who`'s role reads reports of its kind (else 403, audited)."""
    report: Report = svc.reports.load(rid)
    svc.access.authorize_report(request, who, report.pipeline)
    return report


@router.get("/{rid}", response_model=Report)
async def get_report(
    request: Request,
    rid: str,
    who: Principal = Depends(readers),
    svc: Services = Depends(services),
) -> Report:
    with _access(svc, who, "report.read", rid):
        report = readable_report(request, svc, who, rid)
    return await asyncio.to_thread(svc.writeback.turnaround.with_deliveries, report)


@router.get("/{rid}/overlay.png", response_class=Response, responses=file_of("image/png"))
async def get_overlay(
    request: Request,
    rid: str,
    who: Principal = Depends(readers),
    svc: Services = Depends(services),
) -> FileResponse:
    with _access(svc, who, "report.overlay", rid):
        readable_report(request, svc, who, rid)
        path = await overlay_file(svc, rid)
    return FileResponse(path, media_type="image/png")


async def overlay_file(svc: Services, rid: str) -> Path:
    try:  # a WSI heatmap, or a CXR overlay already rendered (older reports: at analysis)
        path: Path = svc.reports.file(rid, "overlay.png")
    except NotFound:  # a CXR overlay not rendered yet: from its saved inputs, off the loop
        path = await svc.cxr_pipeline.overlay_file(rid)
    return path
