"""What models are in service: version, backend, device, checksum, card metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from aidx.inference.drift_monitor import DriftStatus
from aidx.inference.runtime import OnnxModel
from aidx.inference.serving import ServedModel
from aidx.inference.settings import Role
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import errors

router = APIRouter(prefix="/v1")


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
