"""Real peers for integration tests, started by the project itself on 127.0.0.1:
Orthanc with the DICOMweb plugin (Debian packages) and a FHIR R4 server (Medplum's
FhirRouter behind integrations/fhir/peer/server.mjs, npm packages in .peers/fhir).
`make peers` installs both; each peer runs from a fresh temporary directory, on free
ports, and is stopped and waited for. A peer can be stopped and started again on the
same ports and storage, to test outages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..waiting import wait_serving

ROOT = Path(__file__).resolve().parents[2]
ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
FHIR_PEER_DIR = ROOT / ".peers" / "fhir"
FHIR_SERVER_SRC = ROOT / "integrations" / "fhir" / "peer" / "server.mjs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_peers() -> list[str]:
    missing = [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]
    for tool in ("dciodvfy", "dsrdump", "node"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not (FHIR_PEER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        missing.append(str(FHIR_PEER_DIR / "node_modules"))
    return missing


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass
class OrthancPeer:
    workdir: Path
    aet: str = "ORTHANC"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    modalities: dict[str, list[object]] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, object]:
        return {
            "Name": "aidx-test",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "StableAge": 1,
            "SaveJobs": False,
        }

    def start(self) -> OrthancPeer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self.config()))
        log = (self.workdir / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [str(ORTHANC), "--no-jobs", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_serving(f"{self.url}/system", self.process, what="Orthanc", timeout_s=30)
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def instances(self) -> list[dict[str, object]]:
        """Every instance Orthanc holds, with its main DICOM tags."""
        found = httpx.get(f"{self.url}/instances", params={"expand": "true"}, timeout=30)
        found.raise_for_status()
        return list(found.json())

    def file(self, orthanc_id: str) -> bytes:
        return httpx.get(f"{self.url}/instances/{orthanc_id}/file", timeout=30).content

    def clear(self) -> None:
        for patient in httpx.get(f"{self.url}/patients", timeout=30).json():
            httpx.delete(f"{self.url}/patients/{patient}", timeout=30)


@dataclass
class FhirPeer:
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir/R4"

    def start(self) -> FhirPeer:
        # The wrapper runs beside its node_modules (ESM resolves packages from the
        # script's folder); the committed source is copied in at each start.
        shutil.copyfile(FHIR_SERVER_SRC, FHIR_PEER_DIR / "server.mjs")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "fhir.log").open("ab")
        node = ["node"]
        if (
            int(
                subprocess.run(
                    ["node", "-p", "process.versions.node.split('.')[0]"],
                    capture_output=True,
                    text=True,
                ).stdout.strip()
                or 0
            )
            < 22
        ):
            node.append("--experimental-websocket")
        self.process = subprocess.Popen(
            [*node, str(FHIR_PEER_DIR / "server.mjs"), str(self.port), "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=FHIR_PEER_DIR,
            env={**os.environ, "NODE_ENV": "test"},
        )
        wait_serving(f"{self.base_url}/metadata", self.process, what="the FHIR server")
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.base_url}/{resource_type}", params=params, timeout=30)
        response.raise_for_status()
        return [e["resource"] for e in response.json().get("entry", [])]
