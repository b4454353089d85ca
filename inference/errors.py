"""One error root. Each subclass carries the kind of failure and a stable machine
code; the service decides the HTTP status of each kind in one table
(service/handlers.py) and turns every error into JSON. Clients never see a traceback."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    """What went wrong, in the engine's words; a transport maps it to its own status."""

    bad_request = "bad_request"  # damaged or malformed input
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    not_found = "not_found"
    conflict = "conflict"  # the object is not in a state that allows the action
    payload_too_large = "payload_too_large"
    unsupported_media_type = "unsupported_media_type"
    unprocessable = "unprocessable"  # well-formed input the pipeline is not made for
    queue_full = "queue_full"  # busy: the same request may succeed later
    internal = "internal"
    upstream_error = "upstream_error"  # a peer (Triton, the PACS) answered with an error
    unavailable = "unavailable"  # a model or a peer cannot serve now
    deadline_exceeded = "deadline_exceeded"

    @property
    def refuses_input(self) -> bool:
        """The input itself was refused: sending it again cannot help, unlike a busy,
        broken or unreachable service (a report skips or quarantines such input)."""
        return self not in _SERVICE_SIDE


_SERVICE_SIDE = frozenset(
    {
        ErrorKind.queue_full,
        ErrorKind.internal,
        ErrorKind.upstream_error,
        ErrorKind.unavailable,
        ErrorKind.deadline_exceeded,
    }
)


class AidxError(Exception):
    kind: ErrorKind = ErrorKind.internal
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers: dict[str, str] = {}

    @property
    def refuses_input(self) -> bool:
        return self.kind.refuses_input


class BadRequest(AidxError):
    kind = ErrorKind.bad_request
    code = "bad_request"


class Unauthorized(AidxError):
    kind = ErrorKind.unauthorized
    code = "unauthorized"


class Forbidden(AidxError):
    kind = ErrorKind.forbidden
    code = "forbidden"


class NotFound(AidxError):
    kind = ErrorKind.not_found
    code = "not_found"


class PayloadTooLarge(AidxError):
    kind = ErrorKind.payload_too_large
    code = "payload_too_large"


class UnsupportedMediaType(AidxError):
    kind = ErrorKind.unsupported_media_type
    code = "unsupported_media_type"


class Unprocessable(AidxError):
    """Well-formed input the pipeline is not made for (wrong modality, body part...)."""

    kind = ErrorKind.unprocessable
    code = "unprocessable"


class QueueFull(AidxError):
    kind = ErrorKind.queue_full
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.headers["Retry-After"] = str(retry_after_s)


class ModelUnavailable(AidxError):
    kind = ErrorKind.unavailable
    code = "model_unavailable"


class DeadlineExceeded(AidxError):
    kind = ErrorKind.deadline_exceeded
    code = "deadline_exceeded"
