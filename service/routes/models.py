"""What models are in service: version, backend, device, checksum, card metrics, and
the latest validation report (`aidx models validate`), served to engineers."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from aidx.inference.drift_monitor import DriftStatus
from aidx.inference.errors import NotFound
from aidx.inference.runtime import OnnxModel
from aidx.inference.serving import ServedModel
from aidx.inference.settings import Role
from aidx.inference.validation import store as validation_store
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import errors

router = APIRouter(prefix="/v1")

# The report is self-contained: inline style and data: images, never a script or a fetch.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"


def validation_link(served: ServedModel) -> dict[str, Any] | None:
    """Where the latest validation report is served, and what it found (None: none yet)."""
    report = validation_store.read_latest(served.entry.directory)
    if report is None:
        return None
    return {
        "report_url": f"/v1/models/{served.name}/validation",
        "created": report.created.isoformat(),
        "model_version": report.model.version,
        "items": report.dataset.scored,
        "card_metrics_within_ci": all(c.within_ci is not False for c in report.card_comparison),
    }


def describe(served: ServedModel) -> dict[str, Any]:
    entry, card = served.entry, served.entry.card
    runtime = served.runtime
    return {
        "name": served.name,
        "version": entry.version,
        "state": served.state,
        "reason": served.reason,
        "platform": entry.config.platform or entry.config.backend,
        "backend": runtime.backend if runtime else None,
        "provider": runtime.provider if runtime else None,
        "device": runtime.device if runtime else None,
        # in-process: each session copy, with the provider it really got
        "instances": (
            [i.describe() for i in runtime.instances] if isinstance(runtime, OnnxModel) else None
        ),
        "max_batch_size": entry.max_batch_size,
        "sha256": entry.sha256,
        "checksum_ok": entry.checks.get("sha256"),
        "pipeline": card.pipeline if card else None,
        "demo_weights": card.demo_weights if card else None,
        "labels": [lab.__dict__ for lab in card.labels] if card else [],
        "metrics": card.metrics if card else {},
        "validation": validation_link(served),
        # the out-of-distribution gate's calibration, when the model has one
        "ood": card.ood.model_dump(mode="json", exclude={"detection"}) if card and card.ood else None,  # noqa: E501
    }


@router.get("/models", responses=errors(401))
async def list_models(
    _: Principal = Depends(require(*Role)), svc: Services = Depends(services)
) -> list[dict[str, Any]]:
    return [describe(m) for m in svc.models.models.values()]


@router.get("/models/{name}/drift", responses=errors(401, 403, 404))
async def get_drift(
    name: str,
    who: Principal = Depends(require(Role.engineer)),
    svc: Services = Depends(services),
) -> DriftStatus:
    """Each feature of what the model saw and said, over its last N observations and
    its last days, against the reference stored with it: PSI, the two-sample test's
    p-value, the observations each rests on, and whether it drifts. 404
    `model_not_found` or `drift_reference_not_found`."""
    with svc.audit.access(
        actor=who.name, role=who.role.value, action="model.drift", resource=f"model/{name}"
    ):
        return await asyncio.to_thread(svc.drift.status, name)


@router.get("/models/{name}", responses=errors(401, 404))
async def get_model(
    name: str, _: Principal = Depends(require(*Role)), svc: Services = Depends(services)
) -> dict[str, Any]:
    return describe(svc.models.find(name))


@router.get(
    "/models/{name}/validation", response_class=HTMLResponse, responses=errors(401, 403, 404)
)
async def get_validation_report(
    name: str, _: Principal = Depends(require(Role.engineer)), svc: Services = Depends(services)
) -> HTMLResponse:
    """The model's latest validation report, one self-contained HTML page."""
    path = validation_store.latest_html(svc.models.find(name).entry.directory)
    if path is None:
        raise NotFound(f"model {name!r} has no validation report", code="no_validation_report")
    return HTMLResponse(path.read_text(), headers={"Content-Security-Policy": REPORT_CSP})
