"""What a request may cost before a route sees it, enforced as its bytes arrive (a plain
ASGI middleware, ahead of FastAPI, which reads a JSON body before any dependency runs):

- a request with a body must present a valid API key (or the review workspace's live
  session cookie, with its CSRF token: 403 `csrf_failed`) before one byte of the body
  is read (401, or 429 once its address has sent too many wrong keys; throttled and
  audited by service/access.py like every refusal; the role is each route's to check);
- every body has a size limit: the upload routes' own settings, a small one elsewhere
  (AIDX_HTTP_MAX_BODY_BYTES); a declared Content-Length past it is refused at once,
  a chunked body as soon as it passes it (413 `payload_too_large`);
- a body must keep coming (AIDX_HTTP_BODY_TIMEOUT_S, AIDX_HTTP_BODY_MIN_RATE_BYTES_S):
  a slow-loris upload is cut off (408 `body_timeout`);
- at most AIDX_HTTP_MAX_HEADERS headers of AIDX_HTTP_MAX_HEADER_BYTES in all (431
  `too_many_headers`, `headers_too_large`; the protocol, service/http_protocol.py,
  bounds what is buffered before the head is complete).

A refusal is the same coded JSON as every other error, with `Connection: close`: the
rest of an unread body is never drained. The route then sees a disconnected client.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aidx.inference.errors import AidxError
from aidx.inference.settings import Settings
from aidx.service.access import AccessGate
from aidx.service.handlers import error_response, http_status

_CLOSE = {"Connection": "close"}
_DISCONNECT: Message = {"type": "http.disconnect"}


def body_limit(settings: Settings, method: str, path: str) -> int:
    """The most bytes a request's body may hold: the upload routes' own limits, the
    small JSON limit everywhere else."""
    if method == "POST":
        if path == "/v1/ct":
            return settings.ct.max_upload_bytes
        if path == "/v1/wsi/jobs":
            return settings.wsi.max_upload_bytes
        if path in ("/v1/cxr", "/v1/labs/screen") or (
            path.startswith("/v2/models/") and path.endswith("/infer")
        ):
            return settings.max_upload_bytes
    return settings.http.max_body_bytes


def _head_refusal(scope: Scope, settings: Settings) -> tuple[str, str] | None:
    """(code, message) when the request's head is past the header limits."""
    http = settings.http
    headers = scope["headers"]
    if len(headers) > http.max_headers:
        return "too_many_headers", f"more than {http.max_headers} request headers"
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    size += sum(len(name) + len(value) + 4 for name, value in headers)
    if size > http.max_header_bytes:
        return "headers_too_large", f"the request's headers exceed {http.max_header_bytes} bytes"
    return None


def _declared_length(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length if given, whether a body follows at all)."""
    length: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked or bool(length)


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    response = error_response(
        Request(scope), status, code, message, headers={**(headers or {}), **_CLOSE}
    )
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return _DISCONNECT


class RequestLimits:
    def __init__(self, app: ASGIApp, settings: Settings, access: AccessGate) -> None:
        self.app = app
        self.settings = settings
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if refused := _head_refusal(scope, self.settings):
            await refuse(scope, send, 431, *refused)
            return
        declared, has_body = _declared_length(scope)
        if not has_body:
            await self.app(scope, receive, send)
            return
        try:  # before a byte of the body is read
            await self.access.authenticate_request(Request(scope))
        except AidxError as exc:  # 401, or 429 auth_throttled
            await refuse(scope, send, http_status(exc), exc.code, exc.message, exc.headers)
            return
        limit = body_limit(self.settings, scope["method"], scope["path"])
        if declared is not None and declared > limit:
            await refuse(scope, send, 413, "payload_too_large", _too_large(limit))
            return
        guard = BodyGuard(scope, receive, send, limit, self.settings)
        await self.app(scope, guard.receive, guard.send)


def _too_large(limit: int) -> str:
    return f"the body exceeds the limit of {limit} bytes"


class BodyGuard:
    """One request's body, counted and timed as it arrives. Past a limit it answers
    the refusal itself and tells the app the client has gone."""

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, limit: int, settings: Settings
    ) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.limit = limit
        self.http = settings.http
        self.received = 0
        self.waited_s = 0.0
        self.complete = False  # the whole body has arrived
        self.started = False  # a response has begun
        self.refused = False

    async def receive(self) -> Message:
        if self.refused:
            return _DISCONNECT
        if self.complete:
            return await self._receive()  # the body is done: only a disconnect can come
        allowed_s = (
            self.http.body_timeout_s
            + self.received / self.http.body_min_rate_bytes_s
            - self.waited_s
        )
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(allowed_s, 0.0)):
                message = await self._receive()
        except TimeoutError:
            slow = f"the body came too slowly (waits past {self.http.body_timeout_s:g} s)"
            return await self._refuse(408, "body_timeout", slow)
        self.waited_s += time.monotonic() - started
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                return await self._refuse(413, "payload_too_large", _too_large(self.limit))
            self.complete = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the refusal has been answered; the app's own answer goes nowhere
        if message["type"] == "http.response.start":
            self.started = True
            if not self.complete:  # answered before the body was read: do not drain it
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
        await self._send(message)

    async def _refuse(self, status: int, code: str, message: str) -> Message:
        self.refused = True
        if not self.started:
            await refuse(self.scope, self._send, status, code, message)
        return _DISCONNECT
