"""The review workspace's image viewers (the same API serves any client with a key):

GET /v1/reports/{id}/radiograph16.json   the full-resolution radiograph's size, value
                                         range, default window and inversion
GET /v1/reports/{id}/radiograph16.raw    its pixels: little-endian uint16, row-major,
                                         modality values quantised over that range
                                         (both made from the analysis's stored values
                                         on first use, then cached)
GET /v1/ct/reports/{id}/slices/{k}.png?window=lung|mediastinum|bone
                                         axial slice k (0-based, position order) with
                                         every lesion of the label map outlined

Each read is audited and answered to the roles of the report's kind only (a
radiograph's and a CT's: radiologists), as the report itself is. A slice outside the
series is a coded 404 (slice_not_found), a malformed index or window a 422.
"""

from __future__ import annotations

from pathlib import Path as FilePath

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import FileResponse

from aidx.inference.settings import Role
from aidx.pipelines.ct.slices import Window, slice_png
from aidx.pipelines.cxr.full_image import FULL_META_FILE, FULL_PIXELS_FILE, full_image_file
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors, file_of
from aidx.service.routes.evidence import evidence_read

router = APIRouter(tags=["workspace"], responses={**AUTHED, **errors(404)})
radiograph_readers = require(Role.radiologist, Role.pathologist, Role.lab)  # then by kind
ct_readers = require(Role.radiologist)  # as GET /v1/ct/reports/{id}
MAX_SLICE_INDEX = 9999  # past any series the CT intake accepts
_NO_STORE = {"Cache-Control": "private, no-store"}
# A report never changes, nor do its slices: a reader scrolling back and forth within
# a few minutes reads them from the browser's private cache (never a shared one).
_SLICE_CACHE = {"Cache-Control": "private, max-age=300"}


NOT_OF_KIND = "evidence_not_found"  # the 404 code for a report of another kind


async def _radiograph_file(
    request: Request, rid: str, who: Principal, svc: Services, name: str
) -> FilePath:
    with evidence_read(
        request, svc, who, rid, kind="cxr", action="report.radiograph_full", code=NOT_OF_KIND
    ):
        # made on the CPU stage on first use; 404 for a report analysed before
        path: FilePath = await svc.cpu.run(full_image_file, svc.reports, rid, name)
    return path


@router.get(
    "/v1/reports/{rid}/radiograph16.json",
    response_class=Response,
    responses=file_of("application/json"),
)
async def get_radiograph_meta(
    request: Request,
    rid: str,
    who: Principal = Depends(radiograph_readers),
    svc: Services = Depends(services),
) -> FileResponse:
    path = await _radiograph_file(request, rid, who, svc, FULL_META_FILE)
    return FileResponse(path, media_type="application/json", headers=_NO_STORE)


@router.get(
    "/v1/reports/{rid}/radiograph16.raw",
    response_class=Response,
    responses=file_of("application/octet-stream"),
)
async def get_radiograph_pixels(
    request: Request,
    rid: str,
    who: Principal = Depends(radiograph_readers),
    svc: Services = Depends(services),
) -> FileResponse:
    path = await _radiograph_file(request, rid, who, svc, FULL_PIXELS_FILE)
    return FileResponse(path, media_type="application/octet-stream", headers=_NO_STORE)


@router.get(
    "/v1/ct/reports/{rid}/slices/{k}.png",
    response_class=Response,
    responses=file_of("image/png"),
)
async def get_ct_slice(
    request: Request,
    rid: str,
    k: int = Path(ge=0, le=MAX_SLICE_INDEX),
    window: Window = Window.lung,
    who: Principal = Depends(ct_readers),
    svc: Services = Depends(services),
) -> FileResponse:
    with evidence_read(request, svc, who, rid, kind="ct", action="report.slice", code=NOT_OF_KIND):
        path: FilePath = await svc.cpu.run(slice_png, svc.reports, rid, k, window)
    return FileResponse(path, media_type="image/png", headers=_SLICE_CACHE)
