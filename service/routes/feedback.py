"""Clinicians' feedback on a report's findings (a lab alert's id works as a report's):

POST /v1/reports/{id}/feedback   answers, by the role that owns the report kind
GET  /v1/reports/{id}/feedback   the current answers and their history
GET  /v1/feedback/agreement      agreement per model version and finding (and per site,
                                 sex or age band), with counts

The first two are accesses to patient data: audited with their outcome.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from aidx.adapters.feedback import Feedback, FeedbackSaved, FeedbackView, Target
from aidx.inference.agreement import Agreement, Breakdown, agreement
from aidx.inference.cohort import MAX_SITE_CHARS, AgeBand, Dimension, Sex
from aidx.inference.errors import Forbidden
from aidx.inference.feedback import FeedbackRequest
from aidx.inference.settings import Role
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors

router = APIRouter(tags=["feedback"], responses=AUTHED)
clinicians = require(Role.radiologist, Role.pathologist, Role.lab)
_REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {"description": "`role_not_allowed`, or `role_not_owner`: another role owns the report"},
    404: {"description": "`report_not_found`"},
    422: {"description": "`unknown_finding`, `unknown_region` or `invalid_request`"},
}


def _owner_only(target: Target, who: Principal, *, admin_reads: bool) -> None:
    if who.role is target.owner or (admin_reads and who.role is Role.admin):
        return
    raise Forbidden(
        f"{target.subject.pipeline} reports are answered by the {target.owner.value} role",
        code="role_not_owner",
    )


def _feedback(svc: Services) -> Feedback:
    feedback: Feedback = svc.feedback
    return feedback


@router.post(
    "/v1/reports/{rid}/feedback",
    response_model=FeedbackSaved,
    responses={**_REFUSALS, **errors(400)},
)
async def post_feedback(
    rid: str,
    body: FeedbackRequest,
    who: Principal = Depends(clinicians),
    svc: Services = Depends(services),
) -> FeedbackSaved:
    """Answer on findings: a later answer on the same finding replaces the user's
    current one (the earlier stays in the history); the same answer again records
    nothing."""
    feedback = _feedback(svc)
    with svc.audit.access(
        actor=who.name, role=who.role.value, action="report.feedback", resource=f"report/{rid}"
    ):
        target = await asyncio.to_thread(feedback.target, rid)
        _owner_only(target, who, admin_reads=False)
        return await asyncio.to_thread(feedback.record, target, who.name, who.role, body.answers)


@router.get("/v1/reports/{rid}/feedback", response_model=FeedbackView, responses=_REFUSALS)
async def get_feedback(
    rid: str, who: Principal = Depends(clinicians), svc: Services = Depends(services)
) -> FeedbackView:
    feedback = _feedback(svc)
    with svc.audit.access(
        actor=who.name,
        role=who.role.value,
        action="report.feedback.read",
        resource=f"report/{rid}",
    ):
        target = await asyncio.to_thread(feedback.target, rid)
        _owner_only(target, who, admin_reads=True)
        return await asyncio.to_thread(feedback.view, target)


class AgreementList(BaseModel):
    groups: list[Agreement]


@router.get("/v1/feedback/agreement", response_model=AgreementList)
async def get_agreement(
    pipeline: str | None = Query(default=None, max_length=16),
    by: Annotated[
        list[Dimension] | None, Query(description="also group by these: site, sex, age_band")
    ] = None,
    site: str | None = Query(default=None, max_length=MAX_SITE_CHARS),
    sex: Sex | None = None,
    age_band: AgeBand | None = None,
    who: Principal = Depends(require(Role.engineer)),
    svc: Services = Depends(services),
) -> AgreementList:
    """From each user's current answers: counts by verdict, the agreement rate and the
    estimated PPV per pipeline, model version and finding (and per site, sex or age
    band when grouped `by` them; `site`, `sex`, `age_band` keep one group), each rate
    with its n."""
    chosen = {Dimension.site: site, Dimension.sex: sex, Dimension.age_band: age_band}
    only = {d: str(group) for d, group in chosen.items() if group is not None}
    breakdown = Breakdown(pipeline=pipeline, by=tuple(by or ()), only=only)
    groups = await asyncio.to_thread(agreement, svc.db, breakdown)
    return AgreementList(groups=groups)
