"""DICOMweb pull: a study by its StudyInstanceUID from the PACS, routed and analysed.

QIDO-RS lists the study's series; WADO-RS metadata (no bulk data) gives each
instance's attributes, which the same routing rules as the C-STORE intake
(routing.py) match; WADO-RS then fetches only the instances a rule wants (in their
stored transfer syntax), one at a time, and the rule's pipeline analyses each. The
pipelines given are the service's own, so every report goes through the outbox.

Errors are AidxErrors with stable codes: a study the PACS does not have is 404
`study_not_found`; a PACS that cannot be reached (refused, timed out) 503
`pacs_unreachable`; one that answers with an error or something that is not DICOMweb
502 `pacs_error`; a study with nothing to analyse 422 `no_routable_series`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.errors import InvalidDicomError

from aidx.inference.errors import AidxError, BadRequest, ErrorKind, NotFound, Unprocessable
from aidx.inference.reports import Report
from aidx.inference.settings_sections import DicomSettings, PacsSettings
from aidx.integrations.dicom.routing import SERIES_PIPELINES, Rule, route

log = logging.getLogger(__name__)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
T = TypeVar("T")

SERIES_UID = "0020000E"
MODALITY = "00080060"
SERIES_NUMBER = "00200011"


class PacsUnreachable(AidxError):
    kind = ErrorKind.unavailable
    code = "pacs_unreachable"


class PacsError(AidxError):
    kind = ErrorKind.upstream_error
    code = "pacs_error"


class PullUnavailable(AidxError):
    """The service cannot pull at all (no PACS configured, unusable routing rules)."""

    kind = ErrorKind.unavailable
    code = "pull_unavailable"


class Analyzer(Protocol):
    async def analyze(self, data: Any) -> Report: ...  # bytes, or a series' list of bytes


@dataclass
class SeriesOutcome:
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    instances: int
    status: str = "skipped"  # analysed | skipped
    rule: str | None = None
    pipeline: str | None = None
    reports: list[str] = field(default_factory=list)
    reason: str | None = None  # why a series (or some of its instances) was skipped
    skipped_instances: list[dict[str, str]] = field(default_factory=list)


@dataclass
class StudyAnalysis:
    study_instance_uid: str
    series: list[SeriesOutcome]

    @property
    def report_ids(self) -> list[str]:
        return [rid for s in self.series for rid in s.reports]

    def summary(self) -> dict[str, Any]:
        return {
            "study_instance_uid": self.study_instance_uid,
            "analysed_series": sum(s.status == "analysed" for s in self.series),
            "skipped_series": sum(s.status == "skipped" for s in self.series),
            "reports": self.report_ids,
            "series": [asdict(s) for s in self.series],
        }


def _first(item: Mapping[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _no_bulk_data(tag: str, vr: str, uri: str) -> None:
    return None


def _series_of(client: DICOMwebClient, study_uid: str) -> list[dict[str, Any]]:
    """QIDO-RS: the study's series (their JSON); TypeError for an answer of another shape."""
    found = client.search_for_series(study_uid)
    if not isinstance(found, list) or not all(isinstance(i, dict) for i in found):
        raise TypeError("QIDO-RS did not answer a list of datasets")
    return found


def _instances_of(client: DICOMwebClient, study_uid: str, series_uid: str) -> list[pydicom.Dataset]:
    """WADO-RS metadata: each instance's attributes, bulk data left out."""
    found = client.retrieve_series_metadata(study_uid, series_uid)
    if not isinstance(found, list):
        raise TypeError("WADO-RS metadata did not answer a list of datasets")
    return [pydicom.Dataset.from_json(i, bulk_data_uri_handler=_no_bulk_data) for i in found]


async def call_pacs(url: str, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn` (a blocking DICOMweb call to the PACS at `url`) in a thread, its failures as
    the coded errors above; an HTTP 404 is raised as is (the caller says what is missing)."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise PacsUnreachable(
            f"the PACS at {url} cannot be reached ({what}: {type(exc).__name__})"
        ) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            raise
        raise PacsError(f"the PACS answered HTTP {status} to {what}") from None
    except requests.RequestException as exc:  # a broken transfer, a bad redirect
        raise PacsError(f"the PACS's answer to {what} broke off ({type(exc).__name__})") from None
    except (ValueError, KeyError, TypeError, InvalidDicomError) as exc:
        raise PacsError(
            f"the PACS's answer to {what} is not usable DICOMweb ({type(exc).__name__})"
        ) from None


class DicomwebPuller:
    def __init__(
        self,
        pacs: PacsSettings,
        rules: list[Rule],
        pipelines: Mapping[str, Analyzer],
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not pacs.dicomweb_url:
            raise ValueError("pulling needs the PACS's DICOMweb URL (AIDX_PACS_DICOMWEB_URL)")
        self.url = pacs.dicomweb_url.rstrip("/")
        self.timeout = (pacs.connect_timeout_s, pacs.read_timeout_s)
        self.rules = rules
        self.pipelines = dict(pipelines)
        self.headers = headers or {}

    def _client(self) -> DICOMwebClient:
        client = DICOMwebClient(self.url, headers=self.headers, timeout=self.timeout)
        client.set_http_retry_params(retry=False)  # the caller decides whether to retry
        return client

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await call_pacs(self.url, what, fn, *args, **kwargs)

    async def analyze_study(self, study_uid: str) -> StudyAnalysis:
        if not _UID.match(study_uid) or len(study_uid) > 64:
            raise BadRequest(f"{study_uid[:80]!r} is not a DICOM UID", code="invalid_study_uid")
        client = self._client()
        try:
            series = await self._call("QIDO-RS series", _series_of, client, study_uid)
        except requests.HTTPError:
            series = []
        if not series:
            raise NotFound(f"the PACS has no study {study_uid}", code="study_not_found")
        outcomes = []
        for item in series:
            series_uid = str(_first(item, SERIES_UID) or "")
            if not _UID.match(series_uid):
                raise PacsError("QIDO-RS answered a series without a usable SeriesInstanceUID")
            number = _first(item, SERIES_NUMBER)
            outcome = SeriesOutcome(
                series_instance_uid=series_uid,
                modality=_first(item, MODALITY),
                series_number=int(number) if isinstance(number, (int, float)) else None,
                instances=0,
            )
            await self._analyze_series(client, study_uid, outcome)
            outcomes.append(outcome)
        analysis = StudyAnalysis(study_uid, outcomes)
        if not analysis.report_ids:
            reasons = "; ".join(
                f"series {s.series_number or s.series_instance_uid} ({s.modality}): {s.reason}"
                for s in outcomes
            )
            raise Unprocessable(
                f"no series of study {study_uid} could be analysed: {reasons}",
                code="no_routable_series",
            )
        return analysis

    async def _analyze_series(
        self, client: DICOMwebClient, study_uid: str, outcome: SeriesOutcome
    ) -> None:
        series_uid = outcome.series_instance_uid
        try:
            metadata = await self._call(
                "WADO-RS metadata", _instances_of, client, study_uid, series_uid
            )
        except requests.HTTPError:  # 404: the series went away since QIDO
            outcome.reason = "the PACS no longer has this series"
            return
        outcome.instances = len(metadata)
        wanted: list[tuple[str, Rule]] = []
        for ds in metadata:
            sop = str(ds.get("SOPInstanceUID", ""))
            rule = route(self.rules, ds)
            if rule is None:
                outcome.skipped_instances.append(
                    {"sop_instance_uid": sop, "reason": "no routing rule matches"}
                )
            elif rule.pipeline not in self.pipelines:
                outcome.skipped_instances.append(
                    {
                        "sop_instance_uid": sop,
                        "reason": f"pipeline {rule.pipeline!r} does not take pulled studies",
                    }
                )
            elif _UID.match(sop):
                wanted.append((sop, rule))
        whole = [(sop, rule) for sop, rule in wanted if rule.pipeline in SERIES_PIPELINES]
        for sop, rule in wanted:
            if rule.pipeline not in SERIES_PIPELINES:
                data = await self._fetch(client, study_uid, series_uid, sop)
                await self._run(outcome, rule, data, [sop])
        if whole:  # e.g. CT: every wanted instance of the series, analysed together
            blobs = [await self._fetch(client, study_uid, series_uid, sop) for sop, _ in whole]
            await self._run(outcome, whole[0][1], blobs, [sop for sop, _ in whole])
        if outcome.reports:
            outcome.status = "analysed"
        reasons = sorted({s["reason"] for s in outcome.skipped_instances})
        if reasons:
            outcome.reason = "; ".join(reasons)
        elif not outcome.reports:
            outcome.reason = "the series has no instances"

    async def _run(
        self, outcome: SeriesOutcome, rule: Rule, data: bytes | list[bytes], sops: list[str]
    ) -> None:
        outcome.rule, outcome.pipeline = rule.name, rule.pipeline
        try:
            report = await self.pipelines[rule.pipeline].analyze(data)
        except AidxError as exc:
            if not exc.refuses_input:  # the service failed, not the input: the caller retries
                raise
            outcome.skipped_instances.extend(
                {"sop_instance_uid": sop, "reason": f"{rule.pipeline}: {exc.code}"} for sop in sops
            )
            return
        outcome.reports.append(report.id)

    async def _fetch(
        self, client: DICOMwebClient, study_uid: str, series_uid: str, sop: str
    ) -> bytes:
        def fetch() -> bytes:
            ds = client.retrieve_instance(
                study_uid, series_uid, sop, media_types=(("application/dicom", "*"),)
            )
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            return buffer.getvalue()

        try:
            return await self._call("WADO-RS instance", fetch)
        except requests.HTTPError:
            raise PacsError(f"the PACS lost instance {sop} while it was being pulled") from None


def puller_from(
    pacs: PacsSettings, dicom: DicomSettings, pipelines: Mapping[str, Analyzer]
) -> DicomwebPuller:
    """The puller the PACS section asks for, routing by the DICOM intake's rules; 503
    `pacs_not_configured` without a DICOMweb URL."""
    from aidx.integrations.dicom.routing import load_rules

    if not pacs.dicomweb_url:
        raise PullUnavailable(
            "no PACS is configured for DICOMweb (AIDX_PACS_DICOMWEB_URL)",
            code="pacs_not_configured",
        )
    try:
        rules = load_rules(dicom.routing_rules)
    except Exception as exc:  # unreadable YAML, a rule without pipeline or match
        raise PullUnavailable(
            f"the routing rules cannot be used: {exc}", code="routing_rules_invalid"
        ) from None
    return DicomwebPuller(pacs, rules, pipelines)
