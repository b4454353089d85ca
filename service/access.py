"""Access you can audit: who may call a route, read a report, or mark a request STAT,
with every refusal recorded with the client's address and wrong keys throttled per
address (the `limits` library, a moving window in memory: one replica's view).

A wrong key counts against its address: past AIDX_ACCESS_AUTH_FAILURES_MAX within
AIDX_ACCESS_AUTH_FAILURES_WINDOW_S, every request from that address is refused (429
`auth_throttled`, even with a right key: a guesser learns nothing more) until the
window has moved on. A missing key is no guess and is not counted. The review
workspace's browser is identified by its sign-in session instead (service/sessions.py):
the session acts as the key it was opened with."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fastapi import Request
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from aidx.inference.audit import AuditLog, current_client
from aidx.inference.errors import AidxError, Forbidden, QueueFull, Unauthorized
from aidx.inference.settings import Role
from aidx.inference.settings_sections import AccessSettings
from aidx.service.auth import KeyRing, Principal, presented_key
from aidx.service.sessions import SESSION_COOKIE, SessionStore

ANONYMOUS = "anonymous"
# Where a request's principal is kept once authenticated: the body limits (limits.py)
# authenticate before the body, the route's dependency then finds it, not a second check.
_PRINCIPAL = "aidx.principal"
# What a refusal names: "METHOD /path", or how to make it (request.url is costly to
# build, and most requests are never refused)
Resource = str | Callable[[], str]
# Which roles read the reports of each pipeline (admin reads every report).
REPORT_READERS: dict[str, frozenset[Role]] = {
    "cxr": frozenset({Role.radiologist}),
    "ct": frozenset({Role.radiologist}),
    "wsi": frozenset({Role.pathologist}),
    "labs": frozenset({Role.lab}),
}


class AuthThrottled(QueueFull):
    code = "auth_throttled"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class AccessGate:
    """Authentication and authorization of each request, throttled and audited."""

    def __init__(
        self,
        keyring: KeyRing,
        audit: AuditLog,
        settings: AccessSettings,
        sessions: SessionStore | None = None,
    ) -> None:
        self.keyring = keyring
        self.audit = audit
        self.sessions = sessions
        self.stat_roles = frozenset(settings.stat_roles)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        window_s = settings.auth_failures_window_s
        self._failures = RateLimitItemPerSecond(settings.auth_failures_max, window_s)
        # what the audit log takes per address and window, so that no flood fills it
        self._noted = RateLimitItemPerSecond(settings.auth_failures_max, window_s)
        self._throttle_noted = RateLimitItemPerSecond(1, window_s)

    async def authenticate_request(self, request: Request) -> Principal:
        """By the API key presented; without one, by the workspace's session cookie
        (whose state-changing requests must echo its CSRF token). Refusals audited.
        Once per request: a second call answers the principal the first found."""
        known: Principal | None = request.scope.get(_PRINCIPAL)
        if known is None:
            known = request.scope[_PRINCIPAL] = await self._authenticate_request(request)
        return known

    async def _authenticate_request(self, request: Request) -> Principal:
        token = request.cookies.get(SESSION_COOKIE)
        if self.sessions is None or not token or presented_key(request):
            return self.authenticate(request)
        client = client_address(request)
        try:
            principal = await self.sessions.principal(request, token, self.keyring)
        except AidxError as exc:
            if self._limiter.hit(self._noted, exc.code, client):
                self._refusal(_resource(request), ANONYMOUS, "-", exc.code, client)
            raise
        current_client.set(client)
        return principal

    def authenticate(self, request: Request) -> Principal:
        return self.authenticate_key(
            presented_key(request), client_address(request), lambda: _resource(request)
        )

    def authenticate_key(self, presented: str | None, client: str, resource: Resource) -> Principal:
        """The principal of a presented key, for any transport (HTTP, gRPC): a wrong
        key counts against its client's address, every refusal is recorded."""
        if not self._limiter.test(self._failures, "auth", client):
            raise self._throttled(resource, client)
        try:
            principal = self.keyring.identify(presented)
        except Unauthorized as exc:
            if self._limiter.hit(self._noted, exc.code, client):
                self._refusal(resource, ANONYMOUS, "-", exc.code, client)
            if exc.code != "missing_api_key" and not self._limiter.hit(
                self._failures, "auth", client
            ):
                raise self._throttled(resource, client) from None
            raise
        current_client.set(client)  # every audit entry of this request names it
        return principal

    def check_link_client(self, client: str, resource: str) -> None:
        """A client that sent too many forged share links waits, as one with wrong keys."""
        if not self._limiter.test(self._failures, "auth", client):
            raise self._throttled(resource, client)

    def refuse_link(self, client: str, resource: str) -> None:
        """A share link whose signature fails counts against its client as a wrong key."""
        if self._limiter.hit(self._noted, "invalid_share_link", client):
            self._refusal(resource, ANONYMOUS, "-", "invalid_share_link", client)
        self._limiter.hit(self._failures, "auth", client)

    def authorize(self, request: Request, who: Principal, allowed: frozenset[Role]) -> None:
        self.authorize_call(who, allowed, client_address(request), lambda: _resource(request))

    def authorize_call(
        self, who: Principal, allowed: frozenset[Role], client: str, resource: Resource
    ) -> None:
        if who.role is Role.admin or who.role in allowed:
            return
        self._refusal(resource, who.name, who.role.value, "role_not_allowed", client)
        raise Forbidden(f"role {who.role.value!r} may not use this route", code="role_not_allowed")

    def authorize_report(self, request: Request, who: Principal, pipeline: str) -> None:
        """A report is read by the roles of its kind only (a slide's by pathologists)."""
        if who.role is Role.admin or who.role in REPORT_READERS.get(pipeline, frozenset()):
            return
        self._refusal(
            _resource(request), who.name, who.role.value, "report_kind_not_allowed",
            client_address(request),
        )  # fmt: skip
        raise Forbidden(
            f"role {who.role.value!r} may not read {pipeline} reports",
            code="report_kind_not_allowed",
        )

    def allow_stat(self, request: Request, who: Principal) -> None:
        """STAT jumps every queue: only the roles of AIDX_ACCESS_STAT_ROLES may ask for
        it, and each request that does is recorded."""
        allowed = who.role in self.stat_roles
        self.audit.record(
            actor=who.name,
            role=who.role.value,
            action="priority.stat",
            resource=request.url.path,
            outcome="ok" if allowed else "stat_not_allowed",
        )
        if not allowed:
            raise Forbidden(
                f"role {who.role.value!r} may not mark requests STAT", code="stat_not_allowed"
            )

    def _throttled(self, resource: Resource, client: str) -> AuthThrottled:
        stats = self._limiter.get_window_stats(self._failures, "auth", client)
        retry_after_s = max(1, math.ceil(stats.reset_time - time.time()))
        if self._limiter.hit(self._throttle_noted, "throttled", client):
            self._refusal(resource, ANONYMOUS, "-", AuthThrottled.code, client)
        return AuthThrottled(
            "too many failed authentications from this address; try again later",
            retry_after_s=retry_after_s,
        )

    def _refusal(self, resource: Resource, actor: str, role: str, code: str, client: str) -> None:
        self.audit.record(
            actor=actor,
            role=role,
            action="access.refused",
            resource=resource if isinstance(resource, str) else resource(),
            outcome=code,
            client=client,
        )


def _resource(request: Request) -> str:
    return f"{request.method} {request.url.path}"
