"""The review worklist and the CXR view's image layers, for the review workspace (the
same API serves any client with a key):

GET /v1/reports?kind=cxr&review=&model=&date_from=&date_to=&cursor=&limit=
    a kind's reports, STAT first, then those with a finding present, then newest;
    keyset-paged (`next_cursor`)
GET /v1/reports/{id}/radiograph.png   the radiograph (grey, overlay size)
GET /v1/reports/{id}/heatmap.png      the heatmap and hot-region boxes over transparency

Each is by the roles that read the kind's reports (service/access.py) and audited.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from aidx.inference.errors import NotFound
from aidx.inference.report_index import MAX_PAGE, ReviewFilter, WorklistPage, WorklistQuery
from aidx.inference.settings import Role
from aidx.pipelines.cxr.evidence import heat_layer_png, radiograph_png
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors, file_of
from aidx.service.routes.reports import readable_report

router = APIRouter(prefix="/v1/reports", tags=["worklist"], responses=AUTHED)
_IMAGE = {**file_of("image/png"), **errors(404)}
readers = require(Role.radiologist, Role.pathologist, Role.lab)
_IMAGE_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}


@router.get("", response_model=WorklistPage, responses=errors(400))
async def list_reports(
    request: Request,
    kind: str = Query(pattern="^(cxr|ct|wsi)$"),
    review: ReviewFilter | None = None,
    model: str | None = Query(default=None, max_length=128),
    date_from: date | None = None,
    date_to: date | None = None,
    cursor: str | None = Query(default=None, max_length=400),
    limit: int = Query(default=50, ge=1, le=MAX_PAGE),
    who: Principal = Depends(readers),
    svc: Services = Depends(services),
) -> WorklistPage:
    query = WorklistQuery(
        pipeline=kind, review=review, model=model, date_from=date_from, date_to=date_to,
        cursor=cursor, limit=limit,
    )  # fmt: skip
    with svc.audit.access(
        actor=who.name, role=who.role.value, action="worklist.read", resource=f"worklist/{kind}"
    ):
        svc.access.authorize_report(request, who, kind)
        return await asyncio.to_thread(svc.report_index.page, query)


async def _layer(request: Request, svc: Services, who: Principal, action: str) -> Path:
    """A CXR report's image layer (`action`: report.radiograph or report.heatmap)."""
    rid = request.path_params["rid"]
    render = radiograph_png if action == "report.radiograph" else heat_layer_png
    with svc.audit.access(
        actor=who.name, role=who.role.value, action=action, resource=f"report/{rid}"
    ):
        if readable_report(request, svc, who, rid).pipeline != "cxr":
            raise NotFound(f"report {rid!r} is not a radiograph's", code="evidence_not_found")
        path: Path = await svc.cpu.run(render, svc.reports, rid)
    return path


@router.get("/{rid}/radiograph.png", response_class=Response, responses=_IMAGE)
async def get_radiograph(
    request: Request, who: Principal = Depends(readers), svc: Services = Depends(services)
) -> FileResponse:
    path = await _layer(request, svc, who, "report.radiograph")
    return FileResponse(path, media_type="image/png", headers=_IMAGE_HEADERS)


@router.get("/{rid}/heatmap.png", response_class=Response, responses=_IMAGE)
async def get_heatmap(
    request: Request, who: Principal = Depends(readers), svc: Services = Depends(services)
) -> FileResponse:
    path = await _layer(request, svc, who, "report.heatmap")
    return FileResponse(path, media_type="image/png", headers=_IMAGE_HEADERS)
