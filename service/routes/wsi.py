"""Whole-slide jobs: submit a slide (a path under a slide root, or an upload), follow
its progress, cancel it, and fetch the Report, regions GeoJSON and heatmap."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, ValidationError

from aidx.inference.errors import BadRequest, NotFound, UnsupportedMediaType
from aidx.inference.reports import Report
from aidx.inference.settings import Role
from aidx.pipelines.wsi.analysis import GEOJSON_FILE, HEATMAP_FILE
from aidx.pipelines.wsi.intake import resolve_slide_path, save_upload, upload_suffix
from aidx.pipelines.wsi.job_runner import JobRunner
from aidx.pipelines.wsi.job_store import Job, JobState
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors, file_of
from aidx.service.routes.analysis import received_at

router = APIRouter(prefix="/v1/wsi", responses=AUTHED)
pathologist = require(Role.pathologist)
UPLOAD_TYPES = ("application/octet-stream", "image/tiff", "image/x-aperio-svs")


class SlideRequest(BaseModel):
    slide_path: str = Field(description="a path under one of the configured slide roots")
    mpp: float | None = Field(default=None, gt=0, description="um/px, if the slide lacks it")
    mpp_override: bool = Field(
        default=False, description="use `mpp` even where it contradicts the slide's own"
    )
    max_regions: int | None = Field(default=None, ge=1, le=1000)
    min_tissue_fraction: float = Field(default=0.25, ge=0.0, le=1.0)


class DicomSlideRequest(BaseModel):
    study_uid: str = Field(description="the slide's Study Instance UID in the PACS")
    series_uid: str = Field(description="its Series Instance UID (VL Whole Slide Microscopy)")
    max_regions: int | None = Field(default=None, ge=1, le=1000)
    min_tissue_fraction: float = Field(default=0.25, ge=0.0, le=1.0)


class Progress(BaseModel):
    tiles_done: int
    tiles_total: int | None
    fraction: float | None
    rate_tiles_per_s: float | None
    eta_s: float | None


class JobError(BaseModel):
    code: str
    message: str


class WsiJob(BaseModel):
    id: str
    state: JobState
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    slide: dict[str, Any] | None
    progress: Progress
    error: JobError | None = None
    report: Report | None = None
    links: dict[str, str]


def job_links(job_id: str) -> dict[str, str]:
    base = f"/v1/wsi/jobs/{job_id}"
    return {
        "self": base,
        "cancel": f"{base}/cancel",
        "geojson": f"{base}/{GEOJSON_FILE}",
        "heatmap": f"{base}/heatmap.png",
    }


def _view(svc: Services, job: Job) -> WsiJob:
    total = job.tiles_total
    report = None
    if job.state is JobState.succeeded and job.report_id:
        report = svc.writeback.turnaround.with_deliveries(svc.reports.load(job.report_id))
    return WsiJob(
        id=job.id,
        state=job.state,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        slide=job.slide,
        progress=Progress(
            tiles_done=job.tiles_done,
            tiles_total=total,
            fraction=round(job.tiles_done / total, 4) if total else None,
            rate_tiles_per_s=round(job.rate_tiles_s, 1) if job.rate_tiles_s else None,
            eta_s=round(job.eta_s, 1) if job.eta_s is not None else None,
        ),
        error=JobError(code=job.error_code, message=job.error_message or "")
        if job.error_code
        else None,
        report=report,
        links=job_links(job.id),
    )


def _runner(svc: Services) -> JobRunner:
    runner: JobRunner = svc.wsi_jobs
    return runner


def _audit(svc: Services, who: Principal, action: str, resource: str):  # type: ignore[no-untyped-def]
    return svc.audit.access(actor=who.name, role=who.role.value, action=action, resource=resource)


async def _slide_request(request: Request, svc: Services) -> tuple[SlideRequest | None, Path]:
    """JSON names a slide under a root; any other accepted type is the slide itself."""
    settings = svc.settings
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            body = SlideRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise BadRequest(f"invalid job request: {exc.errors()[0]['msg']}") from None
        return body, resolve_slide_path(body.slide_path, settings.wsi.slide_roots)
    if media_type not in UPLOAD_TYPES:
        raise UnsupportedMediaType(
            "send application/json naming a slide_path, or the slide itself as "
            f"{', '.join(UPLOAD_TYPES)}"
        )
    if request.headers.get("content-encoding", "identity") != "identity":
        raise UnsupportedMediaType("slides are uploaded without content encoding")
    suffix = upload_suffix(request.query_params.get("filename"))
    target = settings.var_dir / "wsi" / "uploads" / f"{uuid.uuid4()}{suffix}"
    declared = request.headers.get("content-length")
    await save_upload(
        request.stream(),
        target,
        settings.wsi.max_upload_bytes,
        int(declared) if declared and declared.isdigit() else None,
    )
    return None, target


@router.post(
    "/jobs", status_code=202, response_model=WsiJob, responses=errors(400, 404, 413, 415, 503)
)
async def submit_job(
    request: Request,
    response: Response,
    who: Principal = Depends(pathologist),
    mpp: float | None = Query(default=None, gt=0, description="um/px, for uploads"),
    mpp_override: bool = Query(default=False, description="for uploads: see SlideRequest"),
    svc: Services = Depends(services),
    received_s: float = Depends(received_at),
) -> WsiJob:
    """Submit a slide; the job id comes back at once and the work goes on in the
    background. A slide OpenSlide cannot open, without an MPP, or with a request MPP
    that contradicts its own (422 `mpp_mismatch`, unless overridden) is refused here."""
    body, path = await _slide_request(request, svc)
    uploaded = body is None
    wanted_mpp = body.mpp if body is not None else mpp
    override = body.mpp_override if body is not None else mpp_override
    settings = svc.settings
    with _audit(svc, who, "wsi.submit", "upload" if uploaded else "slide"):
        params = {
            "max_regions": (body.max_regions if body and body.max_regions else None)
            or settings.wsi.max_regions,
            "min_tissue_fraction": body.min_tissue_fraction if body else 0.25,
        }
        try:
            job = await _runner(svc).submit_slide(
                path, uploaded=uploaded, mpp=wanted_mpp, mpp_override=override,
                params=params, submitted_by=who.name, received_at=received_s,
            )  # fmt: skip
        except Exception:
            if uploaded:  # off the loop: unlinking a large file takes a while
                await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
    response.headers["Location"] = f"/v1/wsi/jobs/{job.id}"
    return _view(svc, job)


@router.post(
    "/dicom",
    status_code=202,
    response_model=WsiJob,
    responses=errors(400, 404, 413, 422, 502, 503),
)
async def submit_dicom_slide(
    body: DicomSlideRequest,
    response: Response,
    who: Principal = Depends(pathologist),
    svc: Services = Depends(services),
    received_s: float = Depends(received_at),
) -> WsiJob:
    """Pull a DICOM whole slide from the PACS (DICOMweb) by its study and series and
    analyse it as a job, like a slide given by path; its regions go back to its study
    as an ANN. Refused before any job: not a whole slide (422 `not_a_wsi`), no pyramid
    (`no_pyramid`), no ImageType (`dicom_wsi_no_image_type`), no Pixel Spacing
    (`missing_mpp`), too many instances or bytes (413), a series the PACS lacks (404)."""
    resource = f"study/{body.study_uid}/series/{body.series_uid}"
    with _audit(svc, who, "wsi.dicom.submit", resource):
        slides = svc.dicom_slides
        job, _ = await slides.pull(
            body.study_uid, body.series_uid, submitted_by=who.name,
            params=slides.params(body.max_regions, body.min_tissue_fraction),
            received_at=received_s,
        )  # fmt: skip
    response.headers["Location"] = f"/v1/wsi/jobs/{job.id}"
    return _view(svc, job)


@router.get("/jobs", response_model=list[WsiJob])
async def list_jobs(
    who: Principal = Depends(pathologist),
    limit: int = Query(default=20, ge=1, le=200),
    svc: Services = Depends(services),
) -> list[WsiJob]:
    jobs = await asyncio.to_thread(_runner(svc).store.recent, limit)
    return [_view(svc, job).model_copy(update={"report": None}) for job in jobs]


@router.get("/jobs/{job_id}", response_model=WsiJob, responses=errors(404))
async def get_job(
    job_id: str,
    who: Principal = Depends(pathologist),
    svc: Services = Depends(services),
) -> WsiJob:
    with _audit(svc, who, "wsi.job.read", f"wsi-job/{job_id}"):
        job = await asyncio.to_thread(_runner(svc).store.get, job_id)
        return _view(svc, job)


@router.post("/jobs/{job_id}/cancel", response_model=WsiJob, responses=errors(404))
async def cancel_job(
    job_id: str,
    who: Principal = Depends(pathologist),
    svc: Services = Depends(services),
) -> WsiJob:
    """Cancel a queued or running job; a finished one is returned unchanged."""
    with _audit(svc, who, "wsi.job.cancel", f"wsi-job/{job_id}"):
        job = await _runner(svc).cancel(job_id)
    return _view(svc, job)


def _finished_file(svc: Services, job_id: str, name: str) -> Path:
    job = _runner(svc).store.get(job_id)
    if job.state is not JobState.succeeded or job.report_id is None:
        raise NotFound(
            f"job {job_id} has no results (state: {job.state.value})", code="job_not_finished"
        )
    path: Path = svc.reports.file(job.report_id, name)
    return path


@router.get(
    "/jobs/{job_id}/regions.geojson",
    response_class=Response,
    responses={**file_of("application/geo+json"), **errors(404)},
)
async def get_geojson(
    job_id: str,
    who: Principal = Depends(pathologist),
    svc: Services = Depends(services),
) -> FileResponse:
    """The suggested regions as a QuPath-importable GeoJSON FeatureCollection."""
    with _audit(svc, who, "wsi.regions", f"wsi-job/{job_id}"):
        path = _finished_file(svc, job_id, GEOJSON_FILE)
    return FileResponse(path, media_type="application/geo+json")


@router.get(
    "/jobs/{job_id}/heatmap.png",
    response_class=Response,
    responses={**file_of("image/png"), **errors(404)},
)
async def get_heatmap(
    job_id: str,
    who: Principal = Depends(pathologist),
    svc: Services = Depends(services),
) -> FileResponse:
    with _audit(svc, who, "wsi.heatmap", f"wsi-job/{job_id}"):
        path = _finished_file(svc, job_id, HEATMAP_FILE)
    return FileResponse(path, media_type="image/png")
