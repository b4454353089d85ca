"""What every analysis route shares: the STAT/deadline headers, and the actor that
the analysis step records in the audit trail."""

from __future__ import annotations

import time

from fastapi import Request

from aidx.adapters.analysis import Actor
from aidx.inference.errors import BadRequest
from aidx.service.auth import Principal
from aidx.service.container import Services

PRIORITIES = {"stat": 1, "routine": 2}


def request_priority(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return PRIORITIES[value.strip().lower()]
    except KeyError:
        raise BadRequest(
            "X-Aidx-Priority must be 'stat' or 'routine'", code="invalid_priority"
        ) from None


def allowed_priority(
    request: Request, who: Principal, svc: Services, value: str | None
) -> int | None:
    """The request's priority; STAT only for the roles the STAT policy names (else
    403 `stat_not_allowed`), and recorded in the audit log either way."""
    priority = request_priority(value)
    if priority == PRIORITIES["stat"]:
        svc.access.allow_stat(request, who)
    return priority


def request_timeout_s(deadline_ms: int | None) -> float | None:
    if deadline_ms is None:
        return None
    if deadline_ms <= 0:
        raise BadRequest("X-Aidx-Deadline-Ms must be positive", code="invalid_deadline")
    return deadline_ms / 1000


def actor(who: Principal) -> Actor:
    return Actor(who.name, who.role.value)


async def received_at() -> float:
    """A dependency: when the request arrived (POSIX seconds), taken before its body
    is read (async: no worker-thread hop)."""
    return time.time()
