"""A whole-slide report's slide as DeepZoom tiles, for the pathologist's slide viewer:

GET /v1/wsi/reports/{id}/dzi                              the DeepZoom descriptor (XML)
GET /v1/wsi/reports/{id}/tiles/{level}/{col}_{row}.jpeg   one 256-px JPEG tile

The image is level 0 of the slide the report was made from (so the report's regions,
in level-0 pixels, fall where they should). Pathologists only (and admin, as every
route). Outside the pyramid, or when the slide is gone (an upload is deleted after
its job): a coded 404.

Auditing: reading the descriptor is opening the slide, audited every time
(`wsi.slide.open`). A viewer pans through hundreds of tiles a minute, and one audit
line each would bury the openings that matter; so a tile is not audited, but a
viewer's first tile of a slide that they did not open through the descriptor (since
the slide entered the cache) is recorded as an opening, so nobody sees a slide's
pixels unrecorded. Tiles are counted in `aidx_deepzoom_tiles_total`.

A tile encoded lately is answered from memory, on the event loop (its checks and audit
above as for any tile); one to draw goes to the bounded CPU pool (AIDX_CPU_WORKERS),
where no more tiles are drawn at once than there are cores to draw them.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response

from aidx.inference.errors import NotFound
from aidx.inference.settings import Role
from aidx.pipelines.wsi.deepzoom import OpenedSlide, tile_index
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors, file_of
from aidx.service.routes.evidence import audited, report_of_kind

router = APIRouter(prefix="/v1/wsi/reports", tags=["wsi"], responses={**AUTHED, **errors(404)})
pathologist = require(Role.pathologist)
OPEN_ACTION = "wsi.slide.open"
# The descriptor is revalidated on each opening (so each opening reaches the audit);
# a report's tiles never change, and `private` keeps them out of shared caches.
_DZI_HEADERS = {"Cache-Control": "private, no-cache"}
_TILE_HEADERS = {"Cache-Control": "private, max-age=3600"}


async def _open_slide(request: Request, svc: Services, who: Principal, rid: str) -> OpenedSlide:
    """The report's slide, open: a whole-slide report `who` may read (else 404/403)."""
    cached = svc.deepzoom.get(rid)
    if cached is not None:  # only a whole-slide report's slide gets into the cache
        return cached
    report_of_kind(request, svc, who, rid, "wsi", code="slide_not_available")
    path = await asyncio.to_thread(svc.wsi_jobs.store.slide_of_report, rid)
    if path is None:
        raise NotFound("the slide of this report is no longer on disk", code="slide_not_available")
    return await asyncio.to_thread(svc.deepzoom.open, rid, path)


@router.get("/{rid}/dzi", response_class=Response, responses=file_of("application/xml"))
async def get_dzi(
    request: Request,
    rid: str,
    who: Principal = Depends(pathologist),
    svc: Services = Depends(services),
) -> Response:
    with audited(svc, who, OPEN_ACTION, rid):
        slide = await _open_slide(request, svc, who, rid)
        svc.deepzoom.first_view(slide, who.name)  # its tiles need no opening of their own
    return Response(slide.dzi, media_type="application/xml", headers=_DZI_HEADERS)


@router.get(
    "/{rid}/tiles/{level}/{col}_{row}.jpeg",
    response_class=Response,
    responses=file_of("image/jpeg"),
)
async def get_tile(
    request: Request,
    rid: str,
    level: str,
    col: str,
    row: str,
    who: Principal = Depends(pathologist),
    svc: Services = Depends(services),
) -> Response:
    where = tile_index(level), tile_index(col), tile_index(row)
    slide = await _open_slide(request, svc, who, rid)
    if svc.deepzoom.first_view(slide, who.name):
        svc.audit.record(
            actor=who.name, role=who.role.value, action=OPEN_ACTION,
            resource=f"report/{rid}", outcome="ok",
        )  # fmt: skip
    jpeg = svc.deepzoom.tiles.get((rid, *where))
    if jpeg is None:
        jpeg = await svc.cpu.run(svc.deepzoom.tile, rid, slide, *where)
    svc.metrics.deepzoom_tiles.inc()
    return Response(jpeg, media_type="image/jpeg", headers=_TILE_HEADERS)
