"""GET /v1/models/{name}/shadow: how a model's shadow version compares with the
serving one (engineers). Every rate comes with the counts behind it: `stored` adds up
every batch the store holds, per pair of versions; `running` is this replica's shadow
now (queue, dropped batches, and its comparisons since start)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from aidx.inference.settings import Role
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors

router = APIRouter(prefix="/v1", responses=AUTHED)


@router.get("/models/{name}/shadow", responses=errors(404))
async def model_shadow(
    name: str,
    _: Principal = Depends(require(Role.engineer)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    served = svc.models.find(name)  # 404 model_not_found
    stored = await asyncio.to_thread(svc.shadows.summaries, name)
    shadow = served.shadow
    return {
        "model": name,
        "serving_version": served.entry.version,
        "shadow_version": shadow.shadow_version if shadow else None,
        "state": "running" if shadow else ("unavailable" if served.shadow_reason else "off"),
        "reason": served.shadow_reason,
        "running": shadow.describe() if shadow else None,
        "stored": [pair.as_dict() for pair in stored.get(name, [])],
    }
