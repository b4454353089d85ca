"""What every analysis route shares: the STAT/deadline headers, and the audit trail
around running a pipeline on an upload and creating its report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from fastapi import Request

from aidx.inference.auth import Principal
from aidx.inference.errors import BadRequest

PRIORITIES = {"stat": 1, "routine": 2}


class HasId(Protocol):
    id: str


R = TypeVar("R", bound=HasId)


def request_priority(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return PRIORITIES[value.strip().lower()]
    except KeyError:
        raise BadRequest(
            "X-Aidx-Priority must be 'stat' or 'routine'", code="invalid_priority"
        ) from None


def request_timeout_s(deadline_ms: int | None) -> float | None:
    if deadline_ms is None:
        return None
    if deadline_ms <= 0:
        raise BadRequest("X-Aidx-Deadline-Ms must be positive", code="invalid_deadline")
    return deadline_ms / 1000


async def audited_analysis(
    request: Request, who: Principal, action: str, analyze: Callable[[], Awaitable[R]]
) -> R:
    """Run `analyze` on an upload, recording the access and the report it creates."""
    audit = request.app.state.audit
    with audit.access(actor=who.name, role=who.role.value, action=action, resource="upload"):
        report = await analyze()
    audit.record(
        actor=who.name,
        role=who.role.value,
        action="report.create",
        resource=f"report/{report.id}",
        outcome="ok",
    )
    return report
