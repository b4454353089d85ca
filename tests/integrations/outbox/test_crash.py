"""A real `aidx serve` process killed with SIGKILL while reports wait in the outbox
for a PACS that is down: after a restart everything arrives once, nothing twice."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aidx.inference.settings import Role

from ...conftest import aidx_env, auth, dicom_bytes, free_port
from ...peers import OrthancPeer
from ...waiting import wait_serving, wait_until
from ..conftest import outbox_drained

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def service_env(tmp_path: Path, orthanc: OrthancPeer, port: int) -> dict[str, str]:
    return aidx_env(
        tmp_path / "var", port, enabled_models='["cxr_pneumonia"]',
        pacs_dicomweb_url=orthanc.dicomweb, outbox_poll_s="0.05",
        outbox_backoff_base_s="0.1", outbox_backoff_max_s="0.3",
        outbox_lease_s="3",  # a killed worker's claims expire quickly
    )  # fmt: skip


@contextmanager
def aidx_process(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-m", "aidx.service", "serve",
                                "--log-level", "warning"], env=env)  # fmt: skip
    url = f"http://127.0.0.1:{env['AIDX_PORT']}/readyz"
    try:
        wait_serving(url, process, what="aidx serve")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


def test_sigkill_while_the_pacs_is_down_loses_and_duplicates_nothing(
    tmp_path: Path, orthanc: OrthancPeer
) -> None:
    orthanc.clear()
    port = free_port()
    env = service_env(tmp_path, orthanc, port)
    base = f"http://127.0.0.1:{port}"
    headers = {**auth(Role.radiologist), "Content-Type": "application/dicom"}
    orthanc.stop()
    try:
        with aidx_process(env) as first:
            answer = httpx.post(f"{base}/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"),
                                headers=headers, timeout=60)  # fmt: skip
            assert answer.status_code == 200, answer.text
            report_id = answer.json()["id"]

            def pending() -> int:
                state = httpx.get(f"{base}/v1/outbox", headers=auth(Role.engineer)).json()
                counts = state["destinations"].get("pacs", {})
                return int(counts.get("pending", 0))

            wait_until(lambda: pending() >= 2, timeout_s=10, what="SR + SC pending")
            first.send_signal(signal.SIGKILL)  # no shutdown hooks, no goodbye
            first.wait(timeout=10)
    finally:
        orthanc.start()
    with aidx_process(env):
        wait_until(lambda: len(orthanc.instances()) == 2, timeout_s=60, what="SR + SC delivered")
        again = httpx.post(f"{base}/v1/cxr", content=dicom_bytes("RG1_UNCR.dcm"),
                           headers=headers, timeout=60)  # fmt: skip
        assert again.json()["id"] == report_id
        # Nothing left to deliver (a rebuilt object would be pending): no duplicate can come.
        with httpx.Client(base_url=base) as api:
            wait_until(lambda: outbox_drained(api), what="an empty outbox", timeout_s=60)
        assert len(orthanc.instances()) == 2
