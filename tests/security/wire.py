"""Raw HTTP/1.1 over a socket: hostile clients send what no well-behaved client
library would (a head that never ends, a body that stalls), and read the answer
while they are still sending."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from .conftest import Server, healthz_ms, timed


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(server: Server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=5)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: aidx", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, timeout_s: float = 2.0) -> Answer:
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed without an answer (got {data!r})"
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside the answer's body"
        rest += chunk
    return Answer(int(status_line.split()[1]), headers, rest[:length])


def closed_within(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes the connection within `timeout_s` (data is skipped)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def send_until_refused(sock: socket.socket, piece: bytes, limit_bytes: int) -> int:
    """Send `piece` again and again up to `limit_bytes`; the bytes sent when the
    server stopped taking them (it closed the connection)."""
    sent = 0
    try:
        while sent < limit_bytes:
            sock.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


@contextmanager
def rss_peak(server: Server, every_s: float = 0.005) -> Iterator[dict[str, int]]:
    """The server's RSS growth at its peak while the block runs, sampled from /proc."""
    found = {"baseline": server.rss_bytes(), "growth": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            found["growth"] = max(found["growth"], server.rss_bytes() - found["baseline"])
            time.sleep(every_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        done.set()
        sampler.join()


@dataclass(frozen=True)
class Probed:
    answer: httpx.Response
    seconds: float
    rss_growth_bytes: int
    probes_ms: list[float]  # each /healthz while the request ran


def while_probing(server: Server, send: Callable[[], httpx.Response]) -> Probed:
    """`send` in a thread while /healthz is asked again and again on an open
    connection and the server's peak RSS is sampled."""
    result: dict[str, Any] = {}

    def sender() -> None:
        result["answer"], result["seconds"] = timed(send)

    thread = threading.Thread(target=sender)
    probes: list[float] = []
    with httpx.Client() as client, rss_peak(server) as rss:
        healthz_ms(client, server)  # the connection is open before the request goes
        thread.start()
        while thread.is_alive() or not probes:
            probes.append(healthz_ms(client, server))
        thread.join()
    return Probed(result["answer"], result["seconds"], rss["growth"], probes)
