"""Response headers that keep the review workspace's pages safe in a browser: a strict
Content-Security-Policy (scripts, styles, images and requests from aidx itself only:
no inline script, no inline style but one by its hash, no plugin, no framing), no MIME
sniffing, no referrer, no caching of the session's answers. A plain ASGI middleware (no
per-request task)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The one inline style allowed, by its hash (never 'unsafe-inline'): the rule the slide
# viewer (OpenSeadragon 6.1.1) adds to drop the focus outline on touch screens. Its
# tiles and heatmap are plain same-origin images: no blob: or data: is needed.
OPENSEADRAGON_STYLE_SHA256 = "9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE="
CSP = (
    f"default-src 'self'; style-src 'self' 'sha256-{OPENSEADRAGON_STYLE_SHA256}'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
UI_PREFIXES = ("/ui", "/share")  # the workspace, and the shared result page
_UI_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _is_ui(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in UI_PREFIXES)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ui = _is_ui(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if ui:
                    for name, value in _UI_HEADERS.items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
