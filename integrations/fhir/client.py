"""An outbox destination that posts FHIR transaction bundles to an R4 server (httpx),
with a bearer token when configured."""

from __future__ import annotations

import json

import httpx

from aidx.inference.settings_sections import FhirSettings
from aidx.integrations.outbox.destinations import (
    PermanentDeliveryError,
    TransientDeliveryError,
)
from aidx.integrations.outbox.store import Entry

FHIR_JSON = "application/fhir+json"


def _issues(response: httpx.Response) -> str:
    """The OperationOutcome's diagnostics, for the outbox's last error (no PHI: the
    server's messages name paths and codes)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    issues = body.get("issue", []) if isinstance(body, dict) else []
    texts = []
    for issue in issues:
        text = issue.get("diagnostics") or issue.get("details", {}).get("text", "")
        where = ", ".join(issue.get("expression", []))
        texts.append(f"{text} ({where})" if where else text)
    return "; ".join(t for t in texts if t)[:500]


class FhirDestination:
    def __init__(self, name: str, fhir: FhirSettings) -> None:
        if not fhir.base_url:
            raise ValueError("a FHIR destination needs AIDX_FHIR_BASE_URL")
        self.name = name
        self.base_url = fhir.base_url.rstrip("/")
        self.timeout_s = fhir.timeout_s
        self.headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        if fhir.bearer_token:
            self.headers["Authorization"] = f"Bearer {fhir.bearer_token}"

    def deliver(self, entry: Entry) -> None:
        try:
            response = httpx.post(
                f"{self.base_url}/",
                content=entry.payload,
                headers=self.headers,
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise TransientDeliveryError(f"FHIR server: {type(exc).__name__}") from None
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise TransientDeliveryError(f"FHIR server answered HTTP {status}")
        if status >= 400:
            raise PermanentDeliveryError(f"FHIR server answered HTTP {status}: {_issues(response)}")
        try:
            body = json.loads(response.content)
        except ValueError:
            raise TransientDeliveryError("FHIR server answered a body that is not JSON") from None
        for item in body.get("entry", []):
            code = str(item.get("response", {}).get("status", "")).split(" ")[0]
            if not code.startswith("2"):
                raise PermanentDeliveryError(f"a bundle entry failed with {code}")
