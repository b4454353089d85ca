"""The outbox, visible: counts and last error per destination, entries, and retry or
drop of a dead entry. Engineers and admins only (entries point at patient data)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from aidx.inference.errors import BadRequest
from aidx.inference.settings import Role
from aidx.integrations.outbox.store import OutboxStore, State
from aidx.service.auth import Principal, require
from aidx.service.container import Services, services
from aidx.service.responses import AUTHED, errors

router = APIRouter(prefix="/v1/outbox", responses=AUTHED)
operators = require(Role.engineer)


def _store(svc: Services) -> OutboxStore:
    store: OutboxStore = svc.writeback.store
    return store


def _state(value: str | None) -> State | None:
    if value is None:
        return None
    try:
        return State(value)
    except ValueError:
        raise BadRequest(
            f"state must be one of {', '.join(s.value for s in State)}", code="invalid_state"
        ) from None


@router.get("", responses=errors(400))
async def outbox_summary(
    request: Request,
    who: Principal = Depends(operators),
    state: str | None = Query(default=None),
    destination: str | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=1000),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    store, wanted = _store(svc), _state(state)
    # The store is synchronous (SQLAlchemy Core): off the event loop, which serves
    # every other request meanwhile.
    counts = await asyncio.to_thread(store.counts)
    entries = await asyncio.to_thread(
        store.summaries, state=wanted, destination=destination, limit=limit
    )
    return {"destinations": counts, "entries": entries}


@router.get("/{eid}", responses=errors(404))
async def outbox_entry(
    eid: str,
    who: Principal = Depends(operators),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    entry = await asyncio.to_thread(_store(svc).get, eid)
    return entry.summary()


@router.post("/{eid}/retry", responses=errors(404, 409))
async def retry_entry(
    eid: str,
    who: Principal = Depends(operators),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    with svc.audit.access(
        actor=who.name, role=who.role.value, action="outbox.retry", resource=f"outbox/{eid}"
    ):
        entry = await asyncio.to_thread(_store(svc).retry, eid)
    svc.writeback.worker.wake()
    return entry.summary()


@router.delete("/{eid}", status_code=204, responses=errors(404, 409))
async def drop_entry(
    eid: str,
    who: Principal = Depends(operators),
    svc: Services = Depends(services),
) -> Response:
    with svc.audit.access(
        actor=who.name, role=who.role.value, action="outbox.drop", resource=f"outbox/{eid}"
    ):
        await asyncio.to_thread(_store(svc).drop, eid)
    return Response(status_code=204)
