"""A real NVIDIA Triton Inference Server (Triton 2.51 from PyPI's nvidia-pytriton
0.7.0, in `.peers/pytriton`, made by `make peers`) serving aidx's model repository
through tests/peers/pytriton_peer.py. It runs in its own process group on 127.0.0.1
(HTTP, gRPC and metrics on free ports); `stop` ends the whole group (tritonserver and
the Python-backend stubs are its children) and waits for it. A stopped peer can be
started again on the same ports: an outage. With `private_shm` the server gets a
/dev/shm of its own (a mount namespace; needs root): on this host, yet as far from
aidx's shared memory as a server on another machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from . import ROOT, free_port

PYTRITON_PYTHON = ROOT / ".peers" / "pytriton" / "bin" / "python"
PEER_SCRIPT = Path(__file__).with_name("pytriton_peer.py")
# A new mount namespace with an empty tmpfs on /dev/shm, then the peer (same pid).
PRIVATE_SHM = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
               'mount -t tmpfs -o size=256m tmpfs /dev/shm && exec "$@"', "sh"]  # fmt: skip


def private_shm_missing() -> str | None:
    """Why a peer cannot get a /dev/shm of its own here, or None."""
    probe = subprocess.run(
        [*PRIVATE_SHM, "true"], capture_output=True, text=True, check=False, timeout=10
    )
    return None if probe.returncode == 0 else f"no private /dev/shm: {probe.stderr.strip()}"


def pytriton_missing() -> str | None:
    if not PYTRITON_PYTHON.exists():
        return f"{PYTRITON_PYTHON} is missing: run `make peers`"
    return None


@dataclass
class TritonPeer:
    models: Path
    only: list[str] | None = None
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aidx-triton-")))
    access_token: str | None = None  # then metadata, config and inference want it
    threads: int = 0  # onnxruntime intra-op threads in the peer (0: it decides)
    private_shm: bool = False  # a /dev/shm of its own: aidx's regions are not there
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """host:port of Triton's HTTP endpoint, as AIDX_TRITON_URL wants it."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends to pass Triton's restricted APIs (HTTP)."""
        return {"triton-access-token": self.access_token} if self.access_token else {}

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 120) -> TritonPeer:
        missing = pytriton_missing()
        if missing:
            raise RuntimeError(missing)
        workspace = self.workdir / f"workspace-{time.monotonic_ns()}"
        argv = [
            str(PYTRITON_PYTHON), str(PEER_SCRIPT), "--models", str(self.models),
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--metrics-port", str(self.metrics_port), "--workspace", str(workspace),
            "--threads", str(self.threads),
        ]  # fmt: skip
        for name in self.only or []:
            argv += ["--model", name]
        if self.access_token:
            argv += ["--access-token", self.access_token]
        if self.private_shm:
            argv = [*PRIVATE_SHM, *argv]
        log = (self.workdir / "triton.log").open("ab")
        # The peer's venv, not aidx's: no VIRTUAL_ENV/PYTHONPATH leaking in.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        # PyTriton prints tritonserver's lines from a thread: unbuffered, they reach the
        # log as they happen (tests wait on "Signal (15) received").
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Triton peer exited during start-up (rc {self.process.returncode}); "
                    f"see {self.workdir / 'triton.log'}"
                )
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the Triton peer was not ready in {timeout_s} s")

    def ready(self) -> bool:
        try:
            answer = httpx.get(f"http://{self.url}/v2/health/ready", timeout=1)
        except httpx.TransportError:
            return False
        if answer.status_code != 200:
            return False
        for name in self.only or []:
            try:
                model = httpx.get(f"http://{self.url}/v2/models/{name}/ready", timeout=1)
            except httpx.TransportError:
                return False
            if model.status_code != 200:
                return False
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        _signal_group(process.pid, signal.SIGKILL)  # any straggler left in the group


@contextlib.contextmanager
def serving(peer: TritonPeer) -> Iterator[TritonPeer]:
    """The peer started; then stopped and its working folder removed."""
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(peer.workdir, ignore_errors=True)


def running(peer: TritonPeer) -> TritonPeer:
    """A module's peer, started again if a failed test left it stopped."""
    if peer.process is None or peer.process.poll() is not None:
        peer.stop()
        peer.start()
    return peer


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
