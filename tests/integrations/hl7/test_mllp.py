"""MLLP end to end: python-hl7's MLLP client (an independent peer) sends real-shaped
ORU^R01 messages to a real `aidx serve`; every ACK parses with hl7apy in strict mode;
alerts reach a live SSE client within a second and survive a restart."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from hl7.client import MLLPClient
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from aidx.inference.settings import Role

from ...conftest import auth
from .conftest import LabServer
from .messages import PANEL_20, oru

pytestmark = pytest.mark.integration


def strict_ack(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode()
    message = parse_message(text.strip("\x0b\x1c\r"), validation_level=VALIDATION_LEVEL.STRICT)
    message.validate()
    return message


def send(server: LabServer, data: bytes) -> Any:
    client = MLLPClient("127.0.0.1", server.mllp_port)
    try:
        return strict_ack(client.send_message(data))
    finally:
        client.close()


def raw_exchange(server: LabServer, data: bytes, wait_s: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.mllp_port), timeout=wait_s + 8) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait_s + 8
        while b"\x1c\r" not in received and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def critical_message(control_id: str, patient: str, filler: str) -> bytes:
    obx = [t.replace("|4.2|", "|7.4|") for t in PANEL_20]  # potassium 7.4: critical
    return oru(control_id, patients=((patient, "F", [(filler, obx)]),))


def test_results_are_acknowledged_and_screened(lab_server: LabServer) -> None:
    ack = send(lab_server, oru("MLLP-1"))
    assert ack.msa.msa_1.value == "AA" and ack.msa.msa_2.value == "MLLP-1"
    assert ack.msh.msh_9.msh_9_1.value == "ACK"
    two_patients = oru(
        "MLLP-2",
        patients=(
            ("MRN-A", "M", [("SA-1", PANEL_20), ("SA-2", PANEL_20[:8])]),
            ("MRN-B", "F", [("SB-1", PANEL_20[15:])]),
        ),
    )
    assert send(lab_server, two_patients).msa.msa_1.value == "AA"


@pytest.mark.parametrize(
    ("data", "code", "text"),
    [
        (b"\x07\x08 not hl7 at all", "AR", "MSH"),
        (b"PID|1||X\r", "AR", "MSH"),
        (oru("MLLP-V", version="2.1"), "AR", "version"),
        (oru("MLLP-T").replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01"), "AR", "ORU"),
        (oru("MLLP-S").replace(b"\rPV1|", b"\r??1|"), "AR", "segment"),
        (oru("MLLP-F").replace(b"|F|||20260301081000", b"||||20260301081000"), "AE", "OBX-11"),
    ],
)
def test_malformed_messages_get_a_nak_with_the_reason(
    lab_server: LabServer, data: bytes, code: str, text: str
) -> None:
    ack = send(lab_server, data)
    assert ack.msa.msa_1.value == code
    assert text in ack.err.err_8.value
    # the listener keeps serving
    assert send(lab_server, oru("MLLP-OK")).msa.msa_1.value == "AA"


def test_bytes_outside_a_frame_get_a_nak(lab_server: LabServer) -> None:
    answer = raw_exchange(lab_server, b"hello there\r")
    ack = strict_ack(answer.decode())
    assert ack.msa.msa_1.value == "AR"
    assert "outside an MLLP frame" in ack.err.err_8.value


def test_a_frame_without_end_gets_a_nak_and_the_connection_closes(lab_server: LabServer) -> None:
    started = time.monotonic()
    answer = raw_exchange(lab_server, b"\x0b" + oru("MLLP-X")[:60], wait_s=6)
    assert time.monotonic() - started < 10
    ack = strict_ack(answer.decode())
    assert ack.msa.msa_1.value == "AR"
    assert "without an end block" in ack.err.err_8.value


class AlertFeed:
    """A live SSE client of /v1/labs/alerts/stream on a thread: each alert with the
    moment it arrived; `subscribed` is set once the server has subscribed it (it says
    so with its first comment line, `: connected`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.subscribed = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        with httpx.stream(
            "GET", f"{self.url}/v1/labs/alerts/stream", headers=auth(Role.lab), timeout=30
        ) as response:
            self.events.put((time.monotonic(), {"status": response.status_code}))
            kind = None
            for line in response.iter_lines():
                if line == ": connected":
                    self.subscribed.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "alert":
                    self.events.put((time.monotonic(), json.loads(line[6:])))


def alert_ids(server: LabServer, **params: object) -> set[str]:
    answer = httpx.get(f"{server.url}/v1/labs/alerts", params=params, headers=auth(Role.lab))
    return {a["id"] for a in answer.json()["alerts"]}


def _restart_keeps_the_alert_and_a_resend_adds_none(
    server: LabServer, feed: AlertFeed, message: bytes, alert_id: str
) -> None:
    # The open stream ends at once: it would hold the graceful shutdown for its 10 s.
    stopping = time.monotonic()
    server.stop()
    assert time.monotonic() - stopping < 5
    feed.thread.join(timeout=1)
    assert not feed.thread.is_alive()
    server.start()
    ids_before = alert_ids(server, state="all", limit=1000)
    assert alert_id in ids_before
    assert send(server, message).msa.msa_1.value == "AA"
    assert alert_ids(server, state="all", limit=1000) == ids_before


def _acknowledged_once_with_a_reason(server: LabServer, alert_id: str) -> None:
    headers = auth(Role.lab)
    url = f"{server.url}/v1/labs/alerts/{alert_id}"
    done = httpx.post(f"{url}/ack", json={"reason": "phoned Dr Smith"}, headers=headers)
    assert done.status_code == 200 and done.json()["state"] == "acknowledged"
    assert done.json()["acked_by"] == "lab-1"
    again = httpx.post(f"{url}/ack", json={"reason": "again"}, headers=headers)
    assert again.status_code == 409 and again.json()["code"] == "alert_already_acknowledged"
    evidence = httpx.get(url, headers=headers).json()["evidence"]
    assert evidence["rule"] == "critical_high"
    assert alert_id not in alert_ids(server)  # no longer open


def test_alerts_stream_to_the_feed_within_a_second_and_survive_a_restart(
    lab_server: LabServer,
) -> None:
    feed = AlertFeed(lab_server.url)
    _, first = feed.events.get(timeout=10)
    assert first == {"status": 200}
    assert feed.subscribed.wait(10)

    message = critical_message("MLLP-C1", "MRN-CRIT", "SPC-CRIT")
    ack = send(lab_server, message)
    acked_at = time.monotonic()
    assert ack.msa.msa_1.value == "AA"
    arrived_at, alert = feed.events.get(timeout=5)
    assert arrived_at - acked_at < 1.0
    assert alert["rule"] == "critical_high" and alert["analyte"] == "potassium"
    assert alert["severity"] == "critical" and alert["specimen_id"] == "SPC-CRIT"
    assert alert["source_id"] == "MLLP-C1"
    assert alert["evidence"]["values"][0]["value_canonical"] == 7.4
    assert alert["id"] in alert_ids(lab_server)

    # restart on the same store: the alert is still there, a resend raises nothing new
    _restart_keeps_the_alert_and_a_resend_adds_none(lab_server, feed, message, alert["id"])
    # acknowledge with a reason: no longer open, and only once
    _acknowledged_once_with_a_reason(lab_server, alert["id"])


def test_the_stream_replays_after_last_event_id(lab_server: LabServer) -> None:
    headers = auth(Role.lab)
    send(lab_server, critical_message("MLLP-R1", "MRN-R", "SPC-R1"))
    alerts = httpx.get(
        f"{lab_server.url}/v1/labs/alerts", params={"state": "all", "limit": 1000},
        headers=headers,
    ).json()["alerts"]  # fmt: skip
    last = max(a["seq"] for a in alerts if a["specimen_id"] == "SPC-R1")
    with httpx.stream(
        "GET",
        f"{lab_server.url}/v1/labs/alerts/stream",
        headers={**headers, "Last-Event-ID": str(last - 1)},
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                assert int(line[4:]) == last
                break


def test_the_feed_needs_the_lab_role(lab_server: LabServer) -> None:
    response = httpx.get(
        f"{lab_server.url}/v1/labs/alerts/stream", headers=auth(Role.radiologist), timeout=5
    )
    assert response.status_code == 403


def test_a_review_specimen_is_in_the_feed_and_its_ack_says_so(lab_server: LabServer) -> None:
    obx = [*PANEL_20[:4], "ST|99999-9^Unknown^L||see note||||||F"]  # unknown code: review
    ack = send(lab_server, oru("MLLP-REV", patients=(("MRN-REV", "F", [("SPC-REV", obx)]),)))
    assert ack.msa.msa_1.value == "AA"  # accepted: nothing to resend
    assert ack.msa.msa_3.value == "1 of 1 specimens held: 0 critical, 1 review"
    (err,) = [s for s in ack.children if s.name == "ERR"]
    assert err.err_4.value == "W" and err.err_3.err_3_1.value == "0"
    assert err.err_8.value.startswith("specimen SPC-REV: review: ")
    assert "unknown_code" in err.err_8.value
    alerts = httpx.get(
        f"{lab_server.url}/v1/labs/alerts", params={"specimen_id": "SPC-REV"},
        headers=auth(Role.lab),
    ).json()["alerts"]  # fmt: skip
    assert [a["rule"] for a in alerts] == ["review"]
    assert alerts[0]["severity"] == "warning" and alerts[0]["source_id"] == "MLLP-REV"


def test_a_first_connection_replays_after_the_after_query(lab_server: LabServer) -> None:
    """A browser's EventSource cannot send Last-Event-ID on its first connection: the
    console lists the open alerts, then subscribes with `after=` and misses none."""
    headers = auth(Role.lab)
    send(lab_server, critical_message("MLLP-Q1", "MRN-Q", "SPC-Q1"))
    alerts = httpx.get(
        f"{lab_server.url}/v1/labs/alerts", params={"state": "all", "limit": 1000},
        headers=headers,
    ).json()["alerts"]  # fmt: skip
    last = max(a["seq"] for a in alerts if a["specimen_id"] == "SPC-Q1")
    url = f"{lab_server.url}/v1/labs/alerts/stream"
    with httpx.stream("GET", url, params={"after": last - 1}, headers=headers, timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("id: "):
                assert int(line[4:]) == last
                break
    bad = httpx.get(url, params={"after": -1}, headers=headers, timeout=10)
    assert bad.status_code == 422
