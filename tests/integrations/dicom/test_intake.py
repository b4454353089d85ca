"""Studies in from the PACS: Orthanc C-STOREs a real chest CR (and things aidx must
not analyse) to aidx's SCP; once the study is stable the CR is routed, analysed, and
the SR + overlay appear in Orthanc in the same study."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from aidx.inference.errors import AidxError, QueueFull, Unprocessable
from aidx.integrations.dicom.routing import load_rules, route
from aidx.integrations.dicom.scp import StoreScp
from aidx.service.app import create_app

from ...conftest import dicom_bytes, free_port, make_settings
from ...peers import OrthancPeer
from ...waiting import wait_until

pytestmark = pytest.mark.integration


def test_routing_rules_are_data(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "rules:\n"
        "  - name: thin-chest-ct\n    pipeline: ct\n"
        "    match: {Modality: CT, ImageType: [AXIAL], SliceThickness: {max: 3}}\n"
        "  - name: chest-xr\n    pipeline: cxr\n    match: {Modality: [cr, dx]}\n"
    )
    rules = load_rules(rules_file)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # 5 mm slices, AXIAL
    assert route(rules, ct) is None
    ct.SliceThickness = 1.25
    assert route(rules, ct).name == "thin-chest-ct"  # type: ignore[union-attr]
    cr = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCR.dcm")), stop_before_pixels=True)
    assert route(rules, cr).pipeline == "cxr"  # type: ignore[union-attr]
    assert route(load_rules(None), cr).pipeline == "cxr"  # type: ignore[union-attr]


def test_damaged_files_are_quarantined_with_their_code_and_service_failures_retried(
    tmp_path: Path,
) -> None:
    refusal: list[AidxError] = [QueueFull("busy", retry_after_s=1)]

    async def analyze(pipeline: str, data: bytes | list[bytes], received_s: float) -> None:
        raise refusal[0]

    scp = StoreScp(tmp_path, ae_title="AIDX", port=0, stable_s=1.0,
                   rules=load_rules(None), analyze=analyze)  # fmt: skip
    study = tmp_path / "incoming" / "1.2.3"
    study.mkdir(parents=True)
    (study / "1.2.3.1.dcm").write_bytes(dicom_bytes("RG1_UNCR.dcm")[:200])  # cut short
    (study / "1.2.3.2.dcm").write_bytes(dicom_bytes("RG1_UNCR.dcm"))
    with pytest.raises(QueueFull):  # the service is busy: the study is tried again later
        asyncio.run(scp.process_study("1.2.3"))
    assert (study / "1.2.3.2.dcm").exists()
    refusal[0] = Unprocessable("too small", code="image_too_small")
    asyncio.run(scp.process_study("1.2.3"))
    reasons = {p.name: p.read_text().strip() for p in (tmp_path / "quarantine").rglob("*.txt")}
    assert reasons == {
        "1.2.3.1.reason.txt": "truncated_dicom",
        "1.2.3.2.reason.txt": "cxr: image_too_small",
    }


def _bad_instance() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = "not a uid"
    ds.StudyInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _text_sr_in(study: pydicom.Dataset) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = study.PatientID, study.PatientName
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 50, 1
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.ContinuityOfContent = "SEPARATE"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_pacs_routes_a_study_to_aidx(tmp_path: Path, orthanc: OrthancPeer) -> None:
    orthanc.clear()
    port = free_port()
    settings = make_settings(
        tmp_path, enabled_models=["cxr_pneumonia"], pacs_dicomweb_url=orthanc.dicomweb,
        dicom_scp_port=port, dicom_stable_s=1.0, outbox_poll_s=0.05,
    )  # fmt: skip
    cr = dicom_bytes("RG1_UNCR.dcm")
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]
    source = pydicom.dcmread(io.BytesIO(cr), stop_before_pixels=True)
    note = _text_sr_in(source)  # a non-image object in the same study and association
    note_uid = pydicom.dcmread(io.BytesIO(note)).SOPInstanceUID
    with TestClient(create_app(settings)):
        ids = [httpx.post(f"{orthanc.url}/instances", content=d, timeout=30).json()["ID"]
               for d in (cr, ct, note)]  # fmt: skip
        modality = {"AET": "AIDX", "Host": "127.0.0.1", "Port": port}
        assert httpx.put(f"{orthanc.url}/modalities/AIDX", json=modality).is_success
        sent = httpx.post(f"{orthanc.url}/modalities/AIDX/store", json=ids, timeout=60)
        assert sent.is_success, sent.text  # Orthanc got C-STORE success for both

        # Garbage in the same kind of association: refused, the SCP keeps serving.
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1", ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="AIDX")
        assert assoc.is_established
        status = assoc.send_c_store(_bad_instance())
        assoc.release()
        assert status.Status == 0xC210

        def ours() -> list[dict[str, object]]:
            theirs = {source.SOPInstanceUID, note_uid}
            return [i for i in orthanc.instances()
                    if i["MainDicomTags"]["SOPInstanceUID"] not in theirs  # type: ignore[index]
                    and i["ParentSeries"] in series]  # fmt: skip

        orthanc_study = httpx.get(f"{orthanc.url}/instances/{ids[0]}/study").json()["ID"]

        def series_of_study() -> set[str]:
            return set(httpx.get(f"{orthanc.url}/studies/{orthanc_study}").json()["Series"])

        series: set[str] = set()

        def ours_now() -> list[dict[str, object]]:
            series.update(series_of_study())
            return ours()

        results = wait_until(lambda: len(ours_now()) == 2 and ours(), timeout_s=60, what="SR + SC")
        modalities = sorted(
            str(pydicom.dcmread(io.BytesIO(orthanc.file(str(i["ID"]))), stop_before_pixels=True)
                .Modality) for i in results
        )  # fmt: skip
        assert modalities == ["OT", "SR"]
    # The CT and the text SR matched no rule: quarantined with their reason, not lost,
    # not analysed; the good CR of the same association was.
    reasons = list((tmp_path / "quarantine").rglob("*.reason.txt"))
    assert [r.read_text().strip() for r in reasons] == ["no routing rule matches"] * 2
    assert not any((tmp_path / "incoming").rglob("*.dcm"))


def test_a_chest_ct_series_is_gathered_and_analysed_as_one_series(
    tmp_path: Path, orthanc: OrthancPeer
) -> None:
    from .test_seg import ct_series

    orthanc.clear()
    port = free_port()
    settings = make_settings(
        tmp_path, enabled_models=["ct_pneumonia"], pacs_dicomweb_url=orthanc.dicomweb,
        dicom_scp_port=port, dicom_stable_s=1.0, outbox_poll_s=0.05,
    )  # fmt: skip
    blobs = ct_series(tmp_path / "series", seed=11)
    with TestClient(create_app(settings)):
        ids = [httpx.post(f"{orthanc.url}/instances", content=b, timeout=30).json()["ID"]
               for b in blobs]  # fmt: skip
        modality = {"AET": "AIDX", "Host": "127.0.0.1", "Port": port}
        assert httpx.put(f"{orthanc.url}/modalities/AIDX", json=modality).is_success
        sent = httpx.post(f"{orthanc.url}/modalities/AIDX/store", json=ids, timeout=60)
        assert sent.is_success, sent.text
        study = httpx.get(f"{orthanc.url}/instances/{ids[0]}/study").json()["ID"]

        def derived_modalities() -> list[str]:
            series = httpx.get(f"{orthanc.url}/studies/{study}/series").json()
            return sorted(s["MainDicomTags"]["Modality"] for s in series)

        found = wait_until(lambda: derived_modalities() == ["CT", "SEG", "SR"] and True,
                           timeout_s=90, what="SEG + SR from the C-STOREd CT series")  # fmt: skip
        assert found
    assert not list((tmp_path / "quarantine").rglob("*.reason.txt"))
    assert not any((tmp_path / "incoming").rglob("*.dcm"))
