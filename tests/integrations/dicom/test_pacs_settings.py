"""The PACS section: one connect timeout for every way aidx reaches the PACS."""

from __future__ import annotations

import pytest

from aidx.inference.settings_sections import PacsSettings
from aidx.integrations.dicom.pull import DicomwebPuller
from aidx.integrations.dicom.senders import CStoreDestination, StowDestination

PACS = PacsSettings(
    dicomweb_url="http://pacs.example/dicom-web/",
    dicom_host="pacs.example",
    dicom_port=11112,
    ae_title="ORTHANC",
    connect_timeout_s=3.5,
    stow_timeout_s=45.0,
    read_timeout_s=90.0,
)


def test_sender_and_puller_share_the_pacs_connect_timeout() -> None:
    stow = StowDestination("pacs", PACS)
    cstore = CStoreDestination("pacs", PACS, calling_ae="AIDX")
    puller = DicomwebPuller(PACS, rules=[], pipelines={})
    assert stow.timeout.connect == cstore.timeout_s == puller.timeout[0] == 3.5
    assert stow.timeout.read == 45.0 and puller.timeout[1] == 90.0
    assert (stow.url, puller.url) == ("http://pacs.example/dicom-web",) * 2
    assert (cstore.host, cstore.port, cstore.called_ae) == ("pacs.example", 11112, "ORTHANC")


def test_one_default_connect_timeout() -> None:
    defaults = PacsSettings(dicomweb_url="http://pacs/dicom-web", dicom_host="pacs", dicom_port=104)
    cstore = CStoreDestination("pacs", defaults, calling_ae="AIDX")
    puller = DicomwebPuller(defaults, rules=[], pipelines={})
    assert StowDestination("pacs", defaults).timeout.connect == 10.0
    assert cstore.timeout_s == puller.timeout[0] == 10.0


def test_a_section_without_its_peer_is_refused() -> None:
    with pytest.raises(ValueError, match="AIDX_PACS_DICOMWEB_URL"):
        StowDestination("pacs", PacsSettings())
    with pytest.raises(ValueError, match="AIDX_PACS_DICOM_HOST"):
        CStoreDestination("pacs", PacsSettings(), calling_ae="AIDX")
    with pytest.raises(ValueError, match="AIDX_PACS_DICOMWEB_URL"):
        DicomwebPuller(PacsSettings(), rules=[], pipelines={})
