"""Liveness, readiness and metrics: no API key, no patient data."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aidx.service.container import Services, services

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "a model is not ready (same body)"}})
async def readyz(svc: Services = Depends(services)) -> JSONResponse:
    models = svc.models
    body = {
        "ready": models.ready,
        "models": {m.name: {"state": m.state, "reason": m.reason} for m in models.models.values()},
    }
    return JSONResponse(body, status_code=200 if models.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(svc: Services = Depends(services)) -> Response:
    # off the event loop: the outbox's counts are read from the store
    data = await asyncio.to_thread(generate_latest, svc.metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
