"""The C-STORE SCU destination against a real Orthanc: stored once however often it is
sent, and each failure classed as the outbox needs it (retry or give up)."""

from __future__ import annotations

import io
import time

import pydicom
import pytest

from aidx.adapters.dicom_sr import build_sr
from aidx.adapters.writeback import dicom_bytes
from aidx.inference.settings_sections import PacsSettings
from aidx.integrations.dicom.senders import CStoreDestination
from aidx.integrations.outbox.destinations import PermanentDeliveryError, TransientDeliveryError
from aidx.integrations.outbox.store import Entry, State

from ...peers import OrthancPeer, free_port
from ..conftest import AnalysedCxr

pytestmark = pytest.mark.integration


def entry(payload: bytes) -> Entry:
    now = time.time()
    return Entry(
        id="1", destination="pacs", object_key="sr", kind="sr", media_type="application/dicom",
        report_id=None, payload=payload, state=State.pending, attempts=0, next_attempt_at=now,
        last_error=None, created_at=now, updated_at=now, delivered_at=None,
    )  # fmt: skip


def _pacs(port: int, ae_title: str) -> PacsSettings:
    return PacsSettings(dicom_host="127.0.0.1", dicom_port=port, ae_title=ae_title)


@pytest.fixture
def sr(analysed_cxr: AnalysedCxr) -> pydicom.Dataset:
    source = pydicom.dcmread(io.BytesIO(analysed_cxr.source))
    return build_sr(analysed_cxr.report, [source])


def test_an_sr_is_stored_once_however_often_it_is_sent(
    orthanc: OrthancPeer, sr: pydicom.Dataset
) -> None:
    orthanc.clear()
    pacs = CStoreDestination("pacs", _pacs(orthanc.dicom_port, orthanc.aet), calling_ae="AIDX")
    pacs.deliver(entry(dicom_bytes(sr)))
    pacs.deliver(entry(dicom_bytes(sr)))  # a retry after a lost acknowledgement
    uid = sr.SOPInstanceUID
    stored = [i for i in orthanc.instances() if i["MainDicomTags"]["SOPInstanceUID"] == uid]
    assert len(stored) == 1
    copy = pydicom.dcmread(io.BytesIO(orthanc.file(str(stored[0]["ID"]))))
    assert copy.ContentSequence == sr.ContentSequence


def test_a_pacs_that_is_down_is_retried_later(sr: pydicom.Dataset) -> None:
    nobody = CStoreDestination("pacs", _pacs(free_port(), "ORTHANC"), calling_ae="AIDX")
    with pytest.raises(TransientDeliveryError, match="not established"):
        nobody.deliver(entry(dicom_bytes(sr)))


def test_what_can_never_be_stored_is_given_up(orthanc: OrthancPeer, sr: pydicom.Dataset) -> None:
    pacs = CStoreDestination("pacs", _pacs(orthanc.dicom_port, orthanc.aet), calling_ae="AIDX")
    with pytest.raises(PermanentDeliveryError, match="not DICOM"):
        pacs.deliver(entry(b"this is no DICOM object"))
    sr.SOPClassUID = "1.2.826.0.1.3680043.8.498.999"  # a private class no PACS accepts
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    with pytest.raises(PermanentDeliveryError, match="does not accept SOP class"):
        pacs.deliver(entry(dicom_bytes(sr)))
