"""POST /v1/studies/{StudyInstanceUID}/analyze: pull a study from the PACS over
DICOMweb (QIDO-RS, WADO-RS), route its series by the intake's rules, analyse what
they select, and answer which series ran (with report ids) and which were skipped and
why. The reports go through the outbox like every other report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from aidx.inference.auth import Principal, require
from aidx.inference.settings import Role
from aidx.integrations.dicom.pull import puller_from

router = APIRouter(prefix="/v1/studies")


@router.post("/{study_uid}/analyze")
async def analyze_study(
    study_uid: str,
    request: Request,
    who: Principal = Depends(require(Role.radiologist, Role.engineer)),
) -> dict[str, Any]:
    state = request.app.state
    puller = puller_from(state.settings, {"cxr": state.cxr, "ct": state.ct})
    with state.audit.access(
        actor=who.name, role=who.role.value, action="study.analyze", resource=f"study/{study_uid}"
    ):
        analysis = await puller.analyze_study(study_uid)
    for rid in analysis.report_ids:
        state.audit.record(actor=who.name, role=who.role.value, action="report.create",
                           resource=f"report/{rid}", outcome="ok")  # fmt: skip
    summary = analysis.summary()
    summary["writeback"] = "outbox" if state.settings.writeback else "off"
    summary["links"] = {rid: f"/v1/reports/{rid}" for rid in analysis.report_ids}
    return summary
