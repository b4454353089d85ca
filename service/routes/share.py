"""Share one report by a QR code: a signed, expiring, revocable, read-only link.

POST   /v1/reports/{rid}/shares                 a new link (the report's readers)
GET    /v1/reports/{rid}/shares                 its links and their states
DELETE /v1/reports/{rid}/shares/{share_id}      revoke one
GET    /v1/reports/{rid}/shares/{share_id}/qr.svg   the link as a QR code
GET    /share/{token}          the shared page, no key: findings, overlay, minimal identity
GET    /share/{token}/image.png    its overlay

Every opening is audited as an access to patient data (actor `share:<id>`, the client's
address); an expired or revoked link gets a page saying so (410), never the data; a
forged one is a 404 page and counts against its client as a wrong key does.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime

import segno
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from aidx.inference.errors import NotFound
from aidx.service.access import client_address
from aidx.service.auth import Principal
from aidx.service.container import Services, services
from aidx.service.responses import errors, file_of
from aidx.service.routes.reports import overlay_file, readable_report, readers
from aidx.service.share_page import SharePage, has_image
from aidx.service.shares import Share

router = APIRouter(tags=["share"])
_PRIVATE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


class ShareRequest(BaseModel):
    ttl_s: int | None = Field(default=None, ge=1, description="default 72 h")


class ShareOut(BaseModel):
    share_id: str
    report_id: str
    url: str
    qr_url: str
    state: str  # live | expired | revoked
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None


def _when(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _out(request: Request, svc: Services, share: Share) -> ShareOut:
    base = svc.settings.ui.public_base_url or str(request.base_url)
    rid = share.report_id
    return ShareOut(
        share_id=share.share_id,
        report_id=rid,
        url=f"{base.rstrip('/')}/share/{svc.shares.token(share)}",
        qr_url=f"/v1/reports/{rid}/shares/{share.share_id}/qr.svg",
        state=share.state(svc.shares.clock()),
        created_by=share.created_by,
        created_at=_when(share.created_at_s),  # type: ignore[arg-type]
        expires_at=_when(share.expires_at_s),  # type: ignore[arg-type]
        revoked_at=_when(share.revoked_at_s),
    )


def _audited(svc: Services, who: Principal, action: str, rid: str):  # type: ignore[no-untyped-def]
    return svc.audit.access(
        actor=who.name, role=who.role.value, action=action, resource=f"report/{rid}"
    )


@router.post("/v1/reports/{rid}/shares", response_model=ShareOut, status_code=201,
             responses=errors(400, 401, 403, 404, 422))  # fmt: skip
async def create_share(
    request: Request, rid: str, body: ShareRequest | None = None,
    who: Principal = Depends(readers), svc: Services = Depends(services),
) -> ShareOut:  # fmt: skip
    ui = svc.settings.ui
    ttl_s = min((body.ttl_s if body and body.ttl_s else ui.share_ttl_s), ui.share_max_ttl_s)
    with _audited(svc, who, "share.create", rid):
        readable_report(request, svc, who, rid)
        share = await asyncio.to_thread(svc.shares.create, rid, who.name, ttl_s)
    return _out(request, svc, share)


@router.get("/v1/reports/{rid}/shares", response_model=list[ShareOut],
            responses=errors(401, 403, 404))  # fmt: skip
async def list_shares(
    request: Request, rid: str, who: Principal = Depends(readers),
    svc: Services = Depends(services),
) -> list[ShareOut]:  # fmt: skip
    with _audited(svc, who, "share.list", rid):
        readable_report(request, svc, who, rid)
        shares = await asyncio.to_thread(svc.shares.for_report, rid)
    return [_out(request, svc, share) for share in shares]


async def _share_of(request: Request, svc: Services, who: Principal, rid: str, sid: str) -> Share:
    readable_report(request, svc, who, rid)
    share = await asyncio.to_thread(svc.shares.find, sid)
    if share is None or share.report_id != rid:
        raise NotFound(f"report {rid} has no share {sid}", code="share_not_found")
    return share


@router.delete("/v1/reports/{rid}/shares/{sid}", status_code=204, response_class=Response,
               responses=errors(401, 403, 404))  # fmt: skip
async def revoke_share(
    request: Request, rid: str, sid: str, who: Principal = Depends(readers),
    svc: Services = Depends(services),
) -> Response:  # fmt: skip
    with _audited(svc, who, "share.revoke", rid):
        await _share_of(request, svc, who, rid, sid)
        await asyncio.to_thread(svc.shares.revoke, sid, who.name)
    return Response(status_code=204)


@router.get("/v1/reports/{rid}/shares/{sid}/qr.svg", response_class=Response,
            responses={**file_of("image/svg+xml"), **errors(401, 403, 404)})  # fmt: skip
async def share_qr(
    request: Request, rid: str, sid: str, who: Principal = Depends(readers),
    svc: Services = Depends(services),
) -> Response:  # fmt: skip
    with _audited(svc, who, "share.qr", rid):
        share = await _share_of(request, svc, who, rid, sid)
    svg = io.BytesIO()  # a standalone SVG document (an <img>'s source needs its xmlns)
    segno.make(_out(request, svc, share).url, error="m").save(svg, kind="svg", scale=6, border=4)
    return Response(svg.getvalue(), media_type="image/svg+xml", headers=_PRIVATE)


async def _opened(
    request: Request, svc: Services, token: str, action: str
) -> tuple[Share | None, str]:
    """The share a public link names and its state (live, expired, revoked; `unknown`
    when the signature fails, which counts against the client as a wrong key does);
    every opening audited."""
    client = client_address(request)
    svc.access.check_link_client(client, "/share")
    share = await asyncio.to_thread(svc.shares.verify, token)
    if share is None:
        svc.access.refuse_link(client, "/share")
        return None, "unknown"
    state = share.state(svc.shares.clock())
    svc.audit.record(
        actor=f"share:{share.share_id}", role="public", action=action,
        resource=f"report/{share.report_id}", outcome="ok" if state == "live" else state,
        client=client,
    )  # fmt: skip
    return share, state


_GONE = {"live": 200, "unknown": 404, "expired": 410, "revoked": 410}


@router.get("/share/{token}", response_class=HTMLResponse, include_in_schema=False)
async def open_share(request: Request, token: str, svc: Services = Depends(services)) -> Response:
    share, state = await _opened(request, svc, token, "share.open")
    report = svc.reports.load(share.report_id) if share and state == "live" else None
    page = SharePage(svc.settings.ui, request, token)
    html = page.render(state, report, share.expires_at_s if share else None)
    return HTMLResponse(html, status_code=_GONE[state], headers=_PRIVATE)


@router.get("/share/{token}/image.png", response_class=Response, include_in_schema=False)
async def share_image(request: Request, token: str, svc: Services = Depends(services)) -> Response:
    share, state = await _opened(request, svc, token, "share.image")
    if share is None or state != "live":
        return Response(status_code=_GONE[state], headers=_PRIVATE)
    if not has_image(svc.reports.load(share.report_id)):
        return Response(status_code=404, headers=_PRIVATE)
    path = await overlay_file(svc, share.report_id)
    return FileResponse(path, media_type="image/png", headers=_PRIVATE)
