"""POST /v1/studies/{StudyInstanceUID}/analyze: pull a study from the PACS over
DICOMweb (QIDO-RS, WADO-RS), route its series by the intake's rules, analyse what
they select, and answer which series ran (with report ids) and which were skipped and
why. The reports go through the outbox like every other report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from aidx.inference.settings import Role
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors
from aidx.service.routes.analysis import actor, received_at

router = APIRouter(prefix="/v1/studies", responses=AUTHED)


@router.post("/{study_uid}/analyze", responses=errors(404, 502, 503, 504))
async def analyze_study(
    study_uid: str,
    received_s: float = Depends(received_at),
    who: Principal = Depends(require(Role.radiologist, Role.engineer)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    puller = svc.puller(actor(who), received_s)  # each report it makes is audited as `who`'s
    with svc.audit.access(
        actor=who.name, role=who.role.value, action="study.analyze", resource=f"study/{study_uid}"
    ):
        analysis = await puller.analyze_study(study_uid)
    summary = analysis.summary()
    summary["writeback"] = "outbox" if svc.settings.writeback else "off"
    summary["links"] = {rid: f"/v1/reports/{rid}" for rid in analysis.report_ids}
    return summary
