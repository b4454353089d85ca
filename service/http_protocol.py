"""uvicorn's httptools protocol with the two bounds it lacks: the bytes of a request's
head (request line and headers: httptools buffers a header of any size) and the time
a connection may take to send that head, from connecting or from the end of its last
response (a slow-loris client, or a socket opened and left silent). Idle keep-alive
connections and request bodies are bounded elsewhere (uvicorn's timeout_keep_alive,
service/limits.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aidx.inference.settings_sections import HttpSettings


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = HttpSettings().max_header_bytes
    header_timeout_s = HttpSettings().header_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between requests, or reading a request's head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_header_bytes:
            message = f"the request line and headers exceed {self.max_header_bytes} bytes"
            self._answer_and_close(
                431, "Request Header Fields Too Large", "headers_too_large", message
            )

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if not self._in_head or busy or self.transport.is_closing():
            return
        if self._head_bytes == 0:  # a silent connection: nothing to answer
            self.transport.close()
            return
        message = f"the request's headers took longer than {self.header_timeout_s:g} s"
        self._answer_and_close(408, "Request Timeout", "header_timeout", message)

    def _answer_and_close(self, status: int, reason: str, code: str, message: str) -> None:
        """The coded JSON every refusal gets, written before any app sees the request."""
        if self.transport.is_closing():
            return
        body = json.dumps({"code": code, "message": message}).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
        self._in_head = False


def bounded_protocol(http: HttpSettings) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with this service's limits."""
    limits = {"max_header_bytes": http.max_header_bytes, "header_timeout_s": http.header_timeout_s}
    return type("AidxHttpProtocol", (BoundedHttpToolsProtocol,), limits)
