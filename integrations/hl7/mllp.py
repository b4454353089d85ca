"""MLLP (<VT> message <FS><CR>): a listener (asyncio) and a client (blocking).

Listener: every frame gets an answer: the handler's ACK, or a NAK (AR) for bytes
outside a frame, a frame over the size limit, or a frame without an end block within
the frame timeout (then the connection closes). A handler that raises gets AE.

Client (`send_message`): one message per connection, then wait for the answer frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from aidx.integrations.hl7.message import build_ack

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c\x0d"
Handler = Callable[[bytes], Awaitable[bytes]]


def frame(message: bytes) -> bytes:
    return START + message + END


def send_message(
    host: str, port: int, message: bytes, *, timeout_s: float, max_bytes: int = 1 << 20
) -> bytes:
    """Send one framed message and return the peer's answer (unframed). OSError (and
    TimeoutError) when the peer is unreachable, closes early or does not answer within
    `timeout_s` (for the whole exchange)."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(frame(message))
        buffer = b""
        while END not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {timeout_s:g} s")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                if buffer.endswith(b"\x1c"):  # <FS> and a close: lenient, as the listener
                    buffer += b"\r"
                    break
                raise ConnectionError("the peer closed the connection before answering")
            buffer += chunk
            if len(buffer) > max_bytes:
                raise ConnectionError(f"the answer exceeds {max_bytes} bytes")
    return buffer.partition(END)[0].rpartition(START)[2]


class MllpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        host: str,
        port: int,
        max_frame_bytes: int,
        frame_timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.frame_timeout_s = frame_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listener on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _nak(self, writer: asyncio.StreamWriter, text: str) -> None:
        log.warning("MLLP: %s", text)
        writer.write(frame(build_ack("AR", control_id="", text=text, error_code="100")))
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        while True:
            # outside a frame: wait (idle timeout) for a start block
            while START not in buffer:
                if buffer.strip(b"\r\n\t "):
                    await self._nak(writer, "bytes outside an MLLP frame were discarded")
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), self.idle_timeout_s)
                except TimeoutError:
                    return
                if not chunk:
                    return
                buffer = chunk
            before, _, buffer = buffer.partition(START)
            if before.strip(b"\r\n\t "):
                await self._nak(writer, "bytes outside an MLLP frame were discarded")
            # inside a frame: read until the end block, the size limit or the timeout
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.frame_timeout_s
            while END not in buffer and not (b"\x1c" in buffer and buffer.endswith(b"\x1c")):
                if len(buffer) > self.max_frame_bytes:
                    await self._nak(writer, f"frame exceeds {self.max_frame_bytes} bytes")
                    return
                try:
                    chunk = await asyncio.wait_for(
                        reader.read(65536), max(deadline - loop.time(), 0.001)
                    )
                except TimeoutError:
                    await self._nak(
                        writer, f"frame without an end block within {self.frame_timeout_s:g} s"
                    )
                    return
                if not chunk:
                    log.warning("MLLP: connection closed inside a frame")
                    with contextlib.suppress(ConnectionError):
                        await self._nak(writer, "connection closed inside a frame")
                    return
                buffer += chunk
            if END in buffer:
                message, _, buffer = buffer.partition(END)
            else:  # <FS> then the connection's next read brings <CR>: be lenient
                message, _, buffer = buffer.partition(b"\x1c")
            if START in message:
                await self._nak(
                    writer, "a start block inside a frame: the previous frame had no end"
                )
                message = message.rpartition(START)[2]
            writer.write(frame(await self._handle(message)))
            await writer.drain()

    async def _handle(self, message: bytes) -> bytes:
        try:
            return await self.handler(message)
        except Exception:
            log.exception("MLLP handler failed")
            return build_ack(
                "AE", control_id="", text="internal error; see the server log", error_code="207"
            )
