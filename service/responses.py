"""What the OpenAPI schema says a route may answer besides its success: the coded
error body of service/handlers.py under each status the route can give, so clients
(and the Schemathesis run in the suite) can rely on the schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error answer: a stable machine-readable code and a human message."""

    code: str = Field(description="stable machine-readable code, e.g. `invalid_api_key`")
    message: str = Field(description="what went wrong, for a person")
    error: str | None = Field(
        default=None, description="/v2 routes only: the message again, as Triton's clients read it"
    )


_MEANINGS = {
    400: "the input is damaged or malformed",
    401: "no API key, or not a valid one",
    403: "the key's role may not use this route",
    404: "no such object",
    409: "the object is not in a state that allows the action",
    413: "the body exceeds the size limit",
    415: "the media type or content encoding is not accepted",
    422: "invalid parameters, or input the pipeline is not made for",
    429: "busy: retry after the Retry-After seconds",
    502: "a peer (the PACS, Triton) answered with an error",
    503: "a model or a peer cannot serve now",
    504: "the request's deadline passed",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: the coded error body under each status."""
    return {s: {"model": ErrorBody, "description": _MEANINGS[s]} for s in statuses}


# Every route that takes an API key; routers declare these, routes add their own.
AUTHED = errors(401, 403, 422)
# What running a model adds: damaged or refused input, a busy or unavailable model.
ANALYSIS = errors(400, 413, 415, 429, 503, 504)


def file_of(media_type: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route that answers a file (not JSON) on success."""
    return {200: {"content": {media_type: {}}, "description": f"the {media_type} file"}}
