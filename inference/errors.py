"""One error root. Each subclass carries an HTTP status and a stable machine code;
one handler turns them into JSON. Clients never see a traceback."""

from __future__ import annotations

from typing import Any


class AidxError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers: dict[str, str] = {}


class BadRequest(AidxError):
    status = 400
    code = "bad_request"


class Unauthorized(AidxError):
    status = 401
    code = "unauthorized"


class Forbidden(AidxError):
    status = 403
    code = "forbidden"


class NotFound(AidxError):
    status = 404
    code = "not_found"


class PayloadTooLarge(AidxError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(AidxError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(AidxError):
    """Well-formed input the pipeline is not made for (wrong modality, body part...)."""

    status = 422
    code = "unprocessable"


class QueueFull(AidxError):
    status = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.headers["Retry-After"] = str(retry_after_s)


class ModelUnavailable(AidxError):
    status = 503
    code = "model_unavailable"


class DeadlineExceeded(AidxError):
    status = 504
    code = "deadline_exceeded"
