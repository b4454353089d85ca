"""Reading request bodies with a size limit, so a huge upload is refused (413)
before it fills memory."""

from __future__ import annotations

import zlib

from fastapi import Request

from aidx.inference.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body exceeds the limit of {limit} bytes", limit_bytes=limit)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return _decompress(b"".join(chunks), request.headers.get("content-encoding"), limit)


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(
            f"content encoding {encoding!r} is not supported", code="unsupported_encoding"
        )
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise BadRequest(f"the body is not valid {encoding} data", code="bad_encoding") from None
    if len(data) > limit:
        raise _too_large(limit)
    return data


def require_media_type(request: Request, *allowed: str) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in allowed:
        raise UnsupportedMediaType(
            f"media type {media_type or 'none'!r} is not accepted here; send {', '.join(allowed)}"
        )
