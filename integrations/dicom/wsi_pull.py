"""A whole slide from the PACS: a VL Whole Slide Microscopy Image series, found by its
Study and Series Instance UIDs, pulled over DICOMweb into one folder that OpenSlide
(vendor `dicom`) opens by its level-0 instance.

WADO-RS metadata (no bulk data) is checked first (wsi_series.py: a whole slide, a
pyramid, ImageType, Pixel Spacing, at most `max_instances` instances); then every
instance of the series (all levels, the label and overview too: OpenSlide finds them
beside level 0) is fetched with WADO-RS in its stored transfer syntax and streamed
to disk part by part (python-multipart parses the multipart/related answer as it
arrives), never whole in memory. Past `max_bytes` in all, the pull stops: 413
`slide_too_large`. A series the PACS does not have is 404 `series_not_found`; the
PACS's own failures are pull.py's (503 `pacs_unreachable`, 502 `pacs_error`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
import requests
from python_multipart.multipart import MultipartParser

from aidx.inference.errors import BadRequest, NotFound, PayloadTooLarge
from aidx.inference.files import make_folders, open_private
from aidx.inference.settings_sections import PacsSettings
from aidx.integrations.dicom.pull import PacsError, call_pacs
from aidx.integrations.dicom.wsi_series import check_wsi_series

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class PulledSlide:
    level0: Path  # the file OpenSlide opens; the other instances lie beside it
    instances: int
    bytes_pulled: int
    pull_s: float


def _check_uid(value: str, what: str) -> str:
    if not _UID.match(value) or len(value) > 64:
        raise BadRequest(f"{value[:80]!r} is not a DICOM UID", code=f"invalid_{what}")
    return value


def _boundary(content_type: str) -> bytes:
    media_type, _, rest = content_type.partition(";")
    if media_type.strip().lower() != "multipart/related":
        raise ValueError(f"WADO-RS answered {media_type.strip()!r}, not multipart/related")
    for item in rest.split(";"):
        name, _, value = item.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"').encode()
    raise ValueError("a multipart answer without a boundary")


class _PartWriter:
    """Writes the first part of a multipart/related answer to `out`, counting bytes
    against `budget` (PayloadTooLarge past it)."""

    def __init__(self, out: BinaryIO, budget: int, limit: int) -> None:
        self.out, self.budget, self.limit = out, budget, limit
        self.parts = 0
        self.written = 0

    def begin(self) -> None:
        self.parts += 1

    def data(self, chunk: bytes, start: int, end: int) -> None:
        if self.parts != 1:
            return  # one instance per answer; anything more is not ours
        self.written += end - start
        if self.written > self.budget:
            raise PayloadTooLarge(
                f"the slide exceeds the limit of {self.limit} bytes (AIDX_WSI_DICOM_MAX_BYTES)",
                code="slide_too_large",
                limit_bytes=self.limit,
            )
        self.out.write(chunk[start:end])


class WsiPuller:
    def __init__(self, pacs: PacsSettings, *, max_bytes: int, max_instances: int) -> None:
        if not pacs.dicomweb_url:
            raise ValueError("pulling needs the PACS's DICOMweb URL (AIDX_PACS_DICOMWEB_URL)")
        self.url = pacs.dicomweb_url.rstrip("/")
        self.timeout = (pacs.connect_timeout_s, pacs.read_timeout_s)
        self.max_bytes = max_bytes
        self.max_instances = max_instances

    def _series_url(self, study_uid: str, series_uid: str) -> str:
        return f"{self.url}/studies/{study_uid}/series/{series_uid}"

    def _metadata(self, study_uid: str, series_uid: str) -> list[pydicom.Dataset]:
        answer = requests.get(
            f"{self._series_url(study_uid, series_uid)}/metadata",
            headers={"Accept": "application/dicom+json"},
            timeout=self.timeout,
        )
        answer.raise_for_status()
        found = answer.json()
        if not isinstance(found, list) or not all(isinstance(i, dict) for i in found):
            raise TypeError("WADO-RS metadata did not answer a list of datasets")
        return [pydicom.Dataset.from_json(i, bulk_data_uri_handler=_no_bulk) for i in found]

    def _fetch(self, url: str, target: Path, budget: int) -> int:
        """Stream one instance into `target`; its size in bytes."""
        with requests.get(
            url, headers={"Accept": _ACCEPT}, stream=True, timeout=self.timeout
        ) as answer:
            answer.raise_for_status()
            boundary = _boundary(answer.headers.get("content-type", ""))
            with open_private(target, "wb") as out:
                writer = _PartWriter(out, budget, self.max_bytes)
                parser = MultipartParser(
                    boundary, {"on_part_begin": writer.begin, "on_part_data": writer.data}
                )
                for chunk in answer.iter_content(CHUNK_BYTES):
                    parser.write(chunk)
                parser.finalize()
        if writer.parts == 0 or writer.written == 0:
            raise ValueError("WADO-RS answered no instance")
        return writer.written

    async def pull(self, study_uid: str, series_uid: str, folder: Path) -> PulledSlide:
        """Every instance of the series, checked and written to `folder` (the caller
        removes it when the pull fails)."""
        _check_uid(study_uid, "study_uid")
        _check_uid(series_uid, "series_uid")
        started = time.perf_counter()
        try:
            headers = await call_pacs(
                self.url, "WADO-RS metadata", self._metadata, study_uid, series_uid
            )
        except requests.HTTPError:  # 404
            headers = []
        if not headers:
            raise NotFound(
                f"the PACS has no series {series_uid} in study {study_uid}",
                code="series_not_found",
            )
        level0 = check_wsi_series(headers, max_instances=self.max_instances)
        make_folders(folder)
        total = 0
        for ds in headers:
            sop = _check_uid(str(ds.get("SOPInstanceUID", "")), "sop_instance_uid")
            url = f"{self._series_url(study_uid, series_uid)}/instances/{sop}"
            try:
                total += await call_pacs(
                    self.url, "WADO-RS instance", self._fetch, url, folder / f"{sop}.dcm",
                    self.max_bytes - total,
                )  # fmt: skip
            except requests.HTTPError:  # 404
                raise PacsError(f"the PACS lost instance {sop} while it was pulled") from None
        return PulledSlide(
            level0=folder / f"{level0.SOPInstanceUID}.dcm",
            instances=len(headers),
            bytes_pulled=total,
            pull_s=time.perf_counter() - started,
        )


def _no_bulk(tag: str, vr: str, uri: str) -> None:
    return None
