"""An independent MLLP peer for aidx's HL7 writeback: hl7apy's MLLPServer (not aidx's
own listener) on 127.0.0.1, recording every message it receives and answering with an
ACK built by hl7apy. Answers can be scripted (AE, AR with an ERR code, silence, an
ACK for another message); it can be stopped and started again on the same port."""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

from ...peers import free_port

ORU = "ORU^R01^ORU_R01"


@dataclass(frozen=True)
class Answer:
    code: str = "AA"  # MSA-1
    error_code: str = ""  # ERR-3 (HL7 table 0357)
    text: str = ""
    silent: bool = False  # say nothing: the sender must time out
    other_control_id: bool = False  # acknowledge some other message


def build_peer_ack(control_id: str, answer: Answer) -> str:
    ack = Message("ACK", version="2.5.1")
    ack.msh.msh_3 = "EMRPEER"
    ack.msh.msh_9 = "ACK^R01^ACK"
    ack.msh.msh_10 = f"PEER{abs(hash(control_id)) % 10**12}"
    ack.msh.msh_11 = "P"
    ack.msa.msa_1 = answer.code
    ack.msa.msa_2 = "SOMEONE-ELSE" if answer.other_control_id else control_id
    if answer.error_code:
        err = ack.add_segment("ERR")
        err.err_3 = f"{answer.error_code}^^HL70357"
        err.err_4 = "E"
        err.err_8 = answer.text or "refused"
    return str(ack.to_mllp())


@dataclass
class Hl7Peer:
    port: int = field(default_factory=free_port)
    received: list[str] = field(default_factory=list)  # every message, in order
    answers: deque[Answer] = field(default_factory=deque)  # then AA for the rest
    server: Any = None
    thread: threading.Thread | None = None

    def start(self) -> Hl7Peer:
        peer = self

        class Handler(AbstractHandler):  # type: ignore[misc]
            def reply(self) -> str:
                message = parse_message(self.incoming_message)
                peer.received.append(self.incoming_message)
                answer = peer.answers.popleft() if peer.answers else Answer()
                if answer.silent:
                    threading.Event().wait(2)  # longer than the sender waits
                return build_peer_ack(message.msh.msh_10.value, answer)

        self.server = MLLPServer("127.0.0.1", self.port, {ORU: (Handler,)}, timeout=10)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(timeout=10)
            self.thread = None

    def is_listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0
