"""The outbox, visible: counts and last error per destination, entries, and retry or
drop of a dead entry. Engineers and admins only (entries point at patient data)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from aidx.inference.auth import Principal, require
from aidx.inference.errors import BadRequest
from aidx.inference.settings import Role
from aidx.integrations.outbox.store import OutboxStore, State

router = APIRouter(prefix="/v1/outbox")
operators = require(Role.engineer)


def _store(request: Request) -> OutboxStore:
    store: OutboxStore = request.app.state.writeback.store
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


@router.get("")
async def outbox_summary(
    request: Request,
    who: Principal = Depends(operators),
    state: str | None = Query(default=None),
    destination: str | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    store, wanted = _store(request), _state(state)
    # The store is synchronous (SQLAlchemy Core): off the event loop, which serves
    # every other request meanwhile.
    counts = await asyncio.to_thread(store.counts)
    entries = await asyncio.to_thread(
        store.summaries, state=wanted, destination=destination, limit=limit
    )
    return {"destinations": counts, "entries": entries}


@router.get("/{eid}")
async def outbox_entry(
    eid: str, request: Request, who: Principal = Depends(operators)
) -> dict[str, Any]:
    entry = await asyncio.to_thread(_store(request).get, eid)
    return entry.summary()


@router.post("/{eid}/retry")
async def retry_entry(
    eid: str, request: Request, who: Principal = Depends(operators)
) -> dict[str, Any]:
    entry = await asyncio.to_thread(_store(request).retry, eid)
    request.app.state.audit.record(
        actor=who.name,
        role=who.role.value,
        action="outbox.retry",
        resource=f"outbox/{eid}",
        outcome="ok",
    )
    request.app.state.writeback.worker.wake()
    return entry.summary()


@router.delete("/{eid}", status_code=204)
async def drop_entry(eid: str, request: Request, who: Principal = Depends(operators)) -> Response:
    await asyncio.to_thread(_store(request).drop, eid)
    request.app.state.audit.record(
        actor=who.name,
        role=who.role.value,
        action="outbox.drop",
        resource=f"outbox/{eid}",
        outcome="ok",
    )
    return Response(status_code=204)
