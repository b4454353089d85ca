"""Every error becomes JSON with a stable `code` and a human `message`; the KServe
routes also carry Triton's `error` field, which tritonclient reads. The HTTP status
of each kind of engine error is decided here, in `HTTP_STATUS`, and nowhere else."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from aidx.inference.errors import AidxError, ErrorKind

log = logging.getLogger(__name__)

# FastAPI raises 400 only for a JSON body it cannot parse
_HTTP_CODES = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}

HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.bad_request: 400,
    ErrorKind.unauthorized: 401,
    ErrorKind.forbidden: 403,
    ErrorKind.not_found: 404,
    ErrorKind.conflict: 409,
    ErrorKind.payload_too_large: 413,
    ErrorKind.unsupported_media_type: 415,
    ErrorKind.unprocessable: 422,
    ErrorKind.queue_full: 429,
    ErrorKind.internal: 500,
    ErrorKind.upstream_error: 502,
    ErrorKind.unavailable: 503,
    ErrorKind.deadline_exceeded: 504,
}


def http_status(exc: AidxError) -> int:
    return HTTP_STATUS[exc.kind]


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"code": code, "message": message}
    if request.url.path.startswith("/v2"):
        body["error"] = message
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AidxError)
    async def on_aidx_error(request: Request, exc: AidxError) -> JSONResponse:
        status = http_status(exc)
        if status >= 500:
            log.warning("%s %s -> %s %s", request.method, request.url.path, status, exc.code)
        return error_response(request, status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(request, 422, "invalid_request", f"invalid request: {where}")

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(ClientDisconnect)
    async def on_disconnect(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # A client that gives up on its upload is no server error: one line, no traceback.
        log.info("%s %s: the client left before its body was read", request.method,
                 request.url.path)  # fmt: skip
        return error_response(request, 400, "client_disconnected", "the client disconnected")

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server log only; the client gets a stable code.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "internal error; see the server log")
