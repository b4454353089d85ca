"""POST /v1/ct: a chest CT series (multipart instances or a zip) in, a CtReport out."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
import zlib

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from aidx.inference.errors import BadRequest, NotFound, PayloadTooLarge
from aidx.inference.settings import Role
from aidx.inference.settings_sections import CtSettings
from aidx.pipelines.ct.pipeline import LABEL_MAP_FILE
from aidx.pipelines.ct.report import CtReport
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import ANALYSIS, AUTHED, errors
from aidx.service.routes.analysis import (
    actor,
    allowed_priority,
    received_at,
    request_timeout_s,
)
from aidx.service.routes.reports import readable_report
from aidx.service.uploads import read_body, require_media_type

router = APIRouter(prefix="/v1", responses=AUTHED)
readers = require(Role.radiologist)  # CT reports are a radiologist's (and admin's)
ZIP_MEDIA_TYPES = ("application/zip", "application/x-zip-compressed")
KEY_SLICE = re.compile(r"keyslice_[0-9]{1,3}\.png")


def _too_large(limit_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the series exceeds the limit of {limit_bytes} bytes", limit_bytes=limit_bytes
    )


def _skipped(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.endswith("/") or base.startswith(".") or "__MACOSX" in name or base == "DICOMDIR"


_CHUNK_BYTES = 1 << 20
_RATIO_SLACK_BYTES = 1 << 20  # a tiny member may pack far better than the ratio


def _too_packed(ratio: float) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a zip member unpacks to more than {ratio:g} times its packed size",
        code="zip_ratio_exceeded", max_compression_ratio=ratio,
    )  # fmt: skip


def _inflate(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: int, limits: CtSettings
) -> bytes:
    """One member, counted by the bytes actually unpacked while they are unpacked
    (`budget`: what the series may still take): the zip's own directory may lie."""
    ratio = limits.max_compression_ratio
    ceiling = ratio * member.compress_size + _RATIO_SLACK_BYTES
    if member.file_size > ceiling:
        raise _too_packed(ratio)
    chunks, total = [], 0
    with archive.open(member) as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            total += len(chunk)
            if total > budget:
                raise _too_large(limits.max_upload_bytes)
            if total > ceiling:
                raise _too_packed(ratio)
            chunks.append(chunk)
    return b"".join(chunks)


def unzip_instances(data: bytes, limits: CtSettings) -> list[bytes]:
    """The members of a zip (folders, dot files and DICOMDIR skipped). Their number,
    unpacked size and compression ratio are limited on what the directory declares
    before anything is inflated, and again on the bytes actually inflated. Blocking:
    run it off the event loop."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BadRequest("the body is not a valid zip archive", code="invalid_zip") from None
    members = [m for m in archive.infolist() if not _skipped(m.filename)]
    if len(members) > limits.max_instances:
        raise BadRequest(f"more than {limits.max_instances} instances", code="too_many_instances")
    if sum(m.file_size for m in members) > limits.max_upload_bytes:
        raise _too_large(limits.max_upload_bytes)
    blobs: list[bytes] = []
    budget = limits.max_upload_bytes
    try:
        for member in members:
            blobs.append(_inflate(archive, member, budget, limits))
            budget -= len(blobs[-1])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error,
            NotImplementedError, RuntimeError) as exc:  # fmt: skip
        raise BadRequest(f"a zip member cannot be read: {exc}", code="invalid_zip") from None
    return blobs


async def multipart_instances(request: Request, limits: CtSettings) -> list[bytes]:
    form = await request.form(max_files=limits.max_instances, max_fields=16)
    blobs: list[bytes] = []
    total = 0
    try:
        for _, value in form.multi_items():
            if not isinstance(value, UploadFile):
                continue
            blob = await value.read()
            total += len(blob)
            if total > limits.max_upload_bytes:
                raise _too_large(limits.max_upload_bytes)
            blobs.append(blob)
    finally:
        await form.close()
    if not blobs:
        raise BadRequest("the multipart body holds no files", code="empty_series")
    return blobs


async def series_blobs(request: Request, limits: CtSettings) -> list[bytes]:
    require_media_type(request, "multipart/form-data", *ZIP_MEDIA_TYPES)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise _too_large(limits.max_upload_bytes)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ZIP_MEDIA_TYPES:
        body = await read_body(request, limits.max_upload_bytes)
        return await asyncio.to_thread(unzip_instances, body, limits)
    return await multipart_instances(request, limits)


def _evidence_media_type(name: str) -> str:
    if name == LABEL_MAP_FILE:
        return "application/x-npz"
    if KEY_SLICE.fullmatch(name):
        return "image/png"
    raise NotFound(f"no CT evidence named {name!r}", code="evidence_not_found")


@router.get("/ct/reports/{rid}", response_model=CtReport, responses=errors(404))
async def get_ct_report(
    rid: str, who: Principal = Depends(readers), svc: Services = Depends(services)
) -> CtReport:
    """The whole CT report (GET /v1/reports/{id} gives its common part only)."""
    audit = svc.audit
    with audit.access(
        actor=who.name, role=who.role.value, action="report.read", resource=f"report/{rid}"
    ):
        path = svc.reports.file(rid, "report.json")
        report = CtReport.model_validate_json(path.read_bytes())
    if report.pipeline != "ct":
        raise NotFound(f"report {rid!r} is not a CT report", code="report_not_found")
    return await asyncio.to_thread(svc.writeback.turnaround.with_deliveries, report)


@router.get(
    "/ct/reports/{rid}/{name}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "application/x-npz": {}}, "description": "evidence"},
        **errors(404),
    },
)
async def get_ct_evidence(
    request: Request,
    rid: str,
    name: str,
    who: Principal = Depends(readers),
    svc: Services = Depends(services),
) -> FileResponse:
    media_type = _evidence_media_type(name)
    audit = svc.audit
    with audit.access(
        actor=who.name, role=who.role.value, action="report.evidence", resource=f"report/{rid}"
    ):
        if readable_report(request, svc, who, rid).pipeline != "ct":
            raise NotFound(f"report {rid!r} is not a CT report", code="report_not_found")
        path = svc.reports.file(rid, name)
    return FileResponse(path, media_type=media_type)


@router.post("/ct", response_model=CtReport, responses=ANALYSIS)
async def analyze_ct(
    request: Request,
    received_s: float = Depends(received_at),
    who: Principal = Depends(require(Role.radiologist)),
    x_aidx_priority: str | None = Header(default=None),
    x_aidx_deadline_ms: int | None = Header(default=None),
    svc: Services = Depends(services),
) -> CtReport:
    priority = allowed_priority(request, who, svc, x_aidx_priority)
    timeout_s = request_timeout_s(x_aidx_deadline_ms)
    blobs = await series_blobs(request, svc.settings.ct)
    return await svc.ct.run(
        blobs, actor(who), priority=priority, timeout_s=timeout_s, received_at=received_s
    )
