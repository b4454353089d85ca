"""Bounds a request meets before any route runs: auth before any body, a body limit on
every route, header size and count, timeouts for heads, bodies and idle connections;
and an abandoned upload is one INFO line, not an ERROR with a traceback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from aidx.inference.settings import Role

from ..conftest import KEYS, auth
from ..waiting import wait_until
from .conftest import TIMEOUT_S, WSI_LIMIT_BYTES, Server
from .wire import closed_within, connect, head, read_answer, rss_peak, send_until_refused

pytestmark = pytest.mark.slow
MIB = 1 << 20
RSS_BOUND_BYTES = 64 * MIB
ACK = "/v1/labs/alerts/1/ack"
LAB_KEY = {"Authorization": f"Bearer {KEYS[Role.lab]}"}


def test_an_unauthenticated_chunked_body_is_refused_before_it_is_read(server: Server) -> None:
    sock = connect(server)
    chunk = b"%x\r\n%s\r\n" % (MIB, b"x" * MIB)
    with rss_peak(server) as rss:
        started = time.perf_counter()
        sock.sendall(
            head("POST", ACK, {"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
            + chunk
        )
        answer = read_answer(sock, timeout_s=1.0)
        seconds = time.perf_counter() - started
        sent = MIB + send_until_refused(sock, chunk, 300 * MIB)
    assert (answer.status, answer.json()["code"]) == (401, "missing_api_key")
    assert seconds < 1.0
    assert answer.headers["connection"] == "close"
    assert sent < 300 * MIB  # the server stopped taking the body
    assert rss["growth"] < RSS_BOUND_BYTES


def test_httpx_streaming_a_big_body_without_a_key_gets_401_before_its_generator_ends(
    server: Server,
) -> None:
    consumed = {"chunks": 0}

    def body() -> Iterator[bytes]:
        for _ in range(300):
            consumed["chunks"] += 1
            yield b"x" * MIB

    answer = httpx.post(
        f"{server.url}{ACK}",
        content=body(),
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert (answer.status_code, answer.json()["code"]) == (401, "missing_api_key")
    assert consumed["chunks"] < 300


def test_a_wrong_key_is_refused_before_the_body_too(server: Server) -> None:
    sock = connect(server)
    sock.sendall(
        head(
            "POST",
            "/v1/cxr",
            {"Authorization": "Bearer not-a-key", "Content-Length": str(50 * MIB)},
        )
    )
    answer = read_answer(sock, timeout_s=1.0)
    assert (answer.status, answer.json()["code"]) == (401, "invalid_api_key")


def test_a_100_mib_reason_is_refused_by_its_declared_length(server: Server) -> None:
    sock = connect(server)
    with rss_peak(server) as rss:
        sock.sendall(
            head(
                "POST",
                ACK,
                {**LAB_KEY, "Content-Type": "application/json", "Content-Length": str(100 * MIB)},
            )
            + b'{"reason": "'
        )
        answer = read_answer(sock, timeout_s=1.0)
    assert (answer.status, answer.json()["code"]) == (413, "payload_too_large")
    assert rss["growth"] < RSS_BOUND_BYTES


def test_a_chunked_100_mib_reason_is_refused_as_it_passes_the_limit(server: Server) -> None:
    sock = connect(server)
    chunk = b"%x\r\n%s\r\n" % (MIB, b"x" * MIB)
    with rss_peak(server) as rss:
        sock.sendall(
            head(
                "POST",
                ACK,
                {**LAB_KEY, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            )
            + chunk
        )
        answer = read_answer(sock, timeout_s=1.0)
        sent = MIB + send_until_refused(sock, chunk, 100 * MIB)
    assert (answer.status, answer.json()["code"]) == (413, "payload_too_large")
    assert sent < 100 * MIB
    assert rss["growth"] < RSS_BOUND_BYTES


def test_eight_64_mib_headers_are_refused_and_cost_no_memory(server: Server) -> None:
    answers: list[int] = []
    sent: list[int] = []

    def attack() -> None:
        sock = connect(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: aidx\r\nX-Big: ")
        sent.append(send_until_refused(sock, b"a" * MIB, 64 * MIB))
        answers.append(read_answer(sock).status)

    with rss_peak(server) as rss:
        threads = [threading.Thread(target=attack) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers == [431] * 8
    assert max(sent) < 64 * MIB
    assert rss["growth"] < RSS_BOUND_BYTES


def test_too_many_headers_are_refused(server: Server) -> None:
    headers = {f"X-H{n}": "1" for n in range(200)}
    answer = httpx.get(f"{server.url}/healthz", headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (431, "too_many_headers")


def test_a_slow_loris_body_is_cut_off(server: Server) -> None:
    sock = connect(server)
    started = time.perf_counter()
    sock.sendall(
        head("POST", ACK, {**LAB_KEY, "Content-Type": "application/json", "Content-Length": "1000"})
        + b'{"reason": "'
    )
    answer = read_answer(sock, timeout_s=TIMEOUT_S + 2)
    assert (answer.status, answer.json()["code"]) == (408, "body_timeout")
    assert time.perf_counter() - started < TIMEOUT_S + 1
    assert closed_within(sock, 1.0)


def test_a_slow_loris_head_is_cut_off(server: Server) -> None:
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: aidx\r\nX-Slow: ")
    answer = read_answer(sock, timeout_s=TIMEOUT_S + 2)
    assert (answer.status, answer.json()["code"]) == (408, "header_timeout")


def test_a_silent_connection_and_an_idle_keep_alive_one_are_closed(server: Server) -> None:
    silent = connect(server)
    assert closed_within(silent, TIMEOUT_S + 1.5)
    idle = connect(server)
    idle.sendall(head("GET", "/healthz", {}))
    assert read_answer(idle).status == 200
    assert closed_within(idle, TIMEOUT_S + 1.5)


def test_an_abandoned_upload_is_one_info_line_without_a_traceback(server: Server) -> None:
    before = len(server.log_text())
    sock = connect(server)
    sock.sendall(
        head(
            "POST",
            "/v1/cxr",
            {
                **auth(Role.radiologist),
                "Content-Length": str(MIB),
                "Content-Type": "application/dicom",
            },
        )
        + b"x" * 1000
    )
    sock.close()
    wait_until(
        lambda: "client left" in server.log_text()[before:], what="the INFO line", timeout_s=5
    )
    logged = server.log_text()[before:]
    assert "Traceback" not in logged and " ERROR " not in logged
    assert logged.count("client left") == 1


def test_a_slide_past_the_upload_limit_is_a_coded_413(server: Server) -> None:
    headers = {**auth(Role.pathologist), "Content-Type": "image/tiff"}
    url = f"{server.url}/v1/wsi/jobs?filename=big.tiff"
    declared = httpx.post(url, content=b"x" * (WSI_LIMIT_BYTES + 1), headers=headers)
    assert (declared.status_code, declared.json()["code"]) == (413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"x" * (WSI_LIMIT_BYTES // 2)

    streamed = httpx.post(url, content=chunks(), headers=headers)
    assert (streamed.status_code, streamed.json()["code"]) == (413, "payload_too_large")
