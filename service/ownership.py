"""The review workspace's navigation: which worklists a role sees, from the table that
also decides which reports it reads (service/access.py `REPORT_READERS`): a lab
technician never sees imaging, a pathologist sees slides only; admin sees all. The
engineer page is the engineers' and admins' only."""

from __future__ import annotations

from aidx.inference.settings import Role
from aidx.service.access import REPORT_READERS

KINDS = ("cxr", "ct", "wsi", "labs")  # the worklists, in the navigation's order


def may_see(role: Role, kind: str) -> bool:
    return role is Role.admin or role in REPORT_READERS.get(kind, frozenset())


def views_for(role: Role) -> list[str]:
    """The views a role's navigation shows: its worklists, and for engineers and admins
    the engineer page (models, outbox, metrics)."""
    views = [kind for kind in KINDS if may_see(role, kind)]
    return views + ["engineer"] if role in (Role.engineer, Role.admin) else views
