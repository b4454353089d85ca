"""Outbox destinations for DICOM objects: STOW-RS and C-STORE SCU
(pynetdicom). Both are idempotent at the PACS: objects carry deterministic UIDs, so a
resend is the same instance (Orthanc answers success and keeps one copy)."""

from __future__ import annotations

import io
import uuid

import httpx
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from aidx.inference.settings_sections import PacsSettings
from aidx.integrations.outbox.destinations import (
    PermanentDeliveryError,
    TransientDeliveryError,
)
from aidx.integrations.outbox.store import Entry


def _dataset(entry: Entry) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(entry.payload))
    except Exception as exc:  # a payload aidx wrote itself: never retry it
        raise PermanentDeliveryError(f"the stored object is not DICOM: {exc}") from None


class StowDestination:
    """STOW-RS to a DICOMweb base URL (e.g. http://pacs/dicom-web), one instance per
    request. (httpx rather than dicomweb-client here: its built-in retries would block
    the worker for minutes on a PACS that is down; the outbox owns retrying.)"""

    def __init__(
        self, name: str, pacs: PacsSettings, headers: dict[str, str] | None = None
    ) -> None:
        if not pacs.dicomweb_url:
            raise ValueError("STOW-RS needs the PACS's DICOMweb URL (AIDX_PACS_DICOMWEB_URL)")
        self.name = name
        self.url = pacs.dicomweb_url.rstrip("/")
        self.headers = headers or {}
        self.timeout = httpx.Timeout(pacs.stow_timeout_s, connect=pacs.connect_timeout_s)

    def deliver(self, entry: Entry) -> None:
        _dataset(entry)  # refuse a payload that is not DICOM before sending it
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                entry.payload,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        headers = {
            **self.headers,
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        try:
            response = httpx.post(
                f"{self.url}/studies", content=body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise TransientDeliveryError(f"STOW-RS: {type(exc).__name__}") from None
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise TransientDeliveryError(f"STOW-RS answered HTTP {status}")
        failed = _failed_sops(response)
        if status >= 400 or failed:
            raise PermanentDeliveryError(
                f"STOW-RS refused the instance: HTTP {status}"
                + (f", failure reason {failed}" if failed else "")
            )


def _failed_sops(response: httpx.Response) -> str:
    """The FailedSOPSequence's reasons, when the PACS answered one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    failed = body.get("00081198", {}).get("Value", []) if isinstance(body, dict) else []
    reasons = [str(item.get("00081197", {}).get("Value", ["?"])[0]) for item in failed]
    return ", ".join(reasons)


class CStoreDestination:
    """C-STORE SCU to a DICOM node (the PACS's host, port and AE title), calling as
    `calling_ae` (aidx's own AE title)."""

    def __init__(self, name: str, pacs: PacsSettings, *, calling_ae: str) -> None:
        if not (pacs.dicom_host and pacs.dicom_port):
            raise ValueError("C-STORE needs AIDX_PACS_DICOM_HOST and AIDX_PACS_DICOM_PORT")
        self.name = name
        self.host = pacs.dicom_host
        self.port = pacs.dicom_port
        self.called_ae = pacs.ae_title
        self.calling_ae = calling_ae
        self.timeout_s = pacs.connect_timeout_s

    def deliver(self, entry: Entry) -> None:
        ds = _dataset(entry)
        ae = AE(ae_title=self.calling_ae)
        # Propose only this object's SOP class (in its own transfer syntax, or the two
        # every SCP takes): some PACS refuse associations that offer 100+ contexts.
        own = ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)
        syntaxes = [own, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        ae.add_requested_context(ds.SOPClassUID, list(dict.fromkeys(syntaxes)))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae)
        if not assoc.is_established:
            # It answered, and takes no object of this class: retrying won't help.
            if assoc.rejected_contexts:
                raise PermanentDeliveryError(
                    f"{self.called_ae} does not accept SOP class {ds.SOPClassUID}"
                )
            why = "rejected" if assoc.is_rejected else "not established"
            raise TransientDeliveryError(
                f"association with {self.called_ae}@{self.host}:{self.port} {why}"
            )
        try:
            status = assoc.send_c_store(ds)
        finally:
            assoc.release()
        code = int(status.Status) if status and "Status" in status else None
        if code is None:
            raise TransientDeliveryError("C-STORE got no response")
        if code == 0x0000 or code in (0xB000, 0xB007, 0xB006):  # success or warning
            return
        if 0xA700 <= code <= 0xA7FF:  # out of resources: the PACS may recover
            raise TransientDeliveryError(f"C-STORE status 0x{code:04X}")
        raise PermanentDeliveryError(f"C-STORE refused the instance: status 0x{code:04X}")
