"""What the workspace's image routes share (service/routes/viewer.py, deepzoom.py): a
report of one kind that the caller may read, its reading audited, else a coded 404."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request

from aidx.inference.errors import NotFound
from aidx.inference.reports import Report
from aidx.service.auth import Principal
from aidx.service.container import Services
from aidx.service.routes.reports import readable_report


def report_of_kind(
    request: Request, svc: Services, who: Principal, rid: str, kind: str, *, code: str
) -> Report:
    """Report `rid`, if `who`'s role reads its kind (else 403) and it is a `kind` report
    (else 404 `code`)."""
    report = readable_report(request, svc, who, rid)
    if report.pipeline != kind:
        raise NotFound(f"report {rid!r} is not a {kind} report", code=code)
    return report


@contextmanager
def audited(svc: Services, who: Principal, action: str, rid: str) -> Iterator[None]:
    """`who`'s reading of report `rid` as `action`, audited with its outcome."""
    with svc.audit.access(
        actor=who.name, role=who.role.value, action=action, resource=f"report/{rid}"
    ):
        yield


@contextmanager
def evidence_read(
    request: Request, svc: Services, who: Principal, rid: str, *, kind: str, action: str,
    code: str,
) -> Iterator[Report]:  # fmt: skip
    """The audited reading of a `kind` report's evidence (a file, pixels): the report,
    checked as `report_of_kind` does, for the body to answer from."""
    with audited(svc, who, action, rid):
        yield report_of_kind(request, svc, who, rid, kind, code=code)
