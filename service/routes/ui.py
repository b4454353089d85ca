"""The review workspace: its sign-in session and its static files (HTML, vanilla JS
modules, CSS and the two message catalogues, served from the package; no CDN, no
build step).

POST   /ui/session   sign in: the API key as `Authorization: Bearer <key>` (a header,
                     so a cross-site form cannot sign a victim in), no body; sets the
                     HttpOnly, SameSite=Strict session cookie (Secure over HTTPS)
GET    /ui/session   who is signed in, their role's views and the CSRF token
DELETE /ui/session   sign out (with the CSRF token)
/ui/               the workspace's files
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from aidx.inference.errors import Unauthorized
from aidx.inference.settings import Role, hash_key
from aidx.service.auth import Principal, presented_key
from aidx.service.container import Services, services
from aidx.service.ownership import views_for
from aidx.service.responses import errors
from aidx.service.sessions import SESSION_COOKIE, Session

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
router = APIRouter(prefix="/ui", tags=["workspace"])
_NO_STORE = {"Cache-Control": "no-store"}


class SessionInfo(BaseModel):
    name: str
    role: Role
    views: list[str]  # the worklists the role's navigation shows, e.g. ["cxr", "ct"]
    csrf_token: str  # echo it in X-CSRF-Token on every state-changing request
    expires_at: datetime


def _info(who: Principal, session: Session) -> SessionInfo:
    return SessionInfo(
        name=who.name,
        role=who.role,
        views=views_for(who.role),
        csrf_token=session.csrf_token,
        expires_at=datetime.fromtimestamp(session.expires_at_s, UTC),
    )


def _audit(svc: Services, who: Principal, action: str) -> None:
    svc.audit.record(
        actor=who.name, role=who.role.value, action=action, resource="session", outcome="ok"
    )


@router.post("/session", response_model=SessionInfo, responses=errors(401, 429))
async def sign_in(
    request: Request, response: Response, svc: Services = Depends(services)
) -> SessionInfo:
    who = svc.access.authenticate(request)  # 401 (throttled, audited) for a wrong key
    key = presented_key(request)
    assert key is not None
    token, session = await asyncio.to_thread(svc.sessions.open, hash_key(key))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(svc.settings.ui.session_ttl_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.headers.update(_NO_STORE)
    _audit(svc, who, "ui.sign_in")
    return _info(who, session)


async def _session(request: Request, svc: Services) -> tuple[str, Session]:
    token = request.cookies.get(SESSION_COOKIE)
    session = await asyncio.to_thread(svc.sessions.find, token) if token else None
    if token is None or session is None:
        raise Unauthorized("no session: sign in", code="session_expired")
    return token, session


@router.get("/session", response_model=SessionInfo, responses=errors(401))
async def current_session(
    request: Request, response: Response, svc: Services = Depends(services)
) -> SessionInfo:
    _, session = await _session(request, svc)
    response.headers.update(_NO_STORE)
    return _info(svc.keyring.identify_digest(session.key_sha256), session)


@router.delete("/session", status_code=204, response_class=Response, responses=errors(401, 403))
async def sign_out(request: Request, svc: Services = Depends(services)) -> Response:
    token, _ = await _session(request, svc)
    who = await svc.access.authenticate_request(request)  # checks the CSRF token
    await asyncio.to_thread(svc.sessions.close, token)
    _audit(svc, who, "ui.sign_out")
    response = Response(status_code=204, headers=_NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def mount_workspace(app: FastAPI) -> None:
    """The session routes, then the files under /ui/ (index.html at /ui/)."""
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
