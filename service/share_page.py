"""The shared result page (/share/<token>): rendered on the server, no script, for a
phone first; in English or Vietnamese (the `lang` query, else the browser's
Accept-Language), its dates and numbers formatted per locale (Babel). It shows the
findings, the overlay, when the report was made, and of the patient only what the site
chose (`AIDX_UI_SHARE_IDENTIFIER`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from babel.dates import format_datetime
from babel.numbers import format_percent
from fastapi import Request
from jinja2 import Environment, FileSystemLoader, select_autoescape

from aidx.inference.reports import Finding, Report
from aidx.inference.settings_sections import UiSettings

LANGS = ("en", "vi")
_SERVICE = Path(__file__).resolve().parent
_ENV = Environment(
    loader=FileSystemLoader(_SERVICE / "templates"), autoescape=select_autoescape(["html"])
)


@cache
def catalogue(lang: str) -> dict[str, str]:
    messages: dict[str, str] = json.loads((_SERVICE / "ui" / "i18n" / f"{lang}.json").read_text())
    return messages


def chosen_language(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip()[:2].lower()
        if code in LANGS:
            return code
    return "en"


def masked_id(patient_id: str | None) -> str | None:
    """The end of a patient id (its last four characters, never more than half of it),
    so that its holder can tell the result is theirs and nobody else learns the id."""
    if not patient_id:
        return None
    shown = min(4, len(patient_id) // 2)
    return "•" * min(len(patient_id) - shown, 4) + patient_id[len(patient_id) - shown :]


def has_image(report: Report) -> bool:
    """A radiograph's overlay or a slide's heatmap (a CT's lesions need the viewer)."""
    return report.pipeline in ("cxr", "wsi")


@dataclass
class FindingRow:
    name: str
    result: str
    probability: str | None
    css: str  # present | absent | not-assessed


class SharePage:
    def __init__(self, ui: UiSettings, request: Request, token: str) -> None:
        self.ui = ui
        self.lang = chosen_language(request)
        self.token = token

    def t(self, key: str, **values: Any) -> str:
        text = catalogue(self.lang).get(key, key)
        return text.format(**values) if values else text

    def render(self, state: str, report: Report | None, expires_at_s: float | None) -> str:
        context: dict[str, Any] = {"lang": self.lang, "langs": LANGS, "t": self.t}
        context.update(state=state, report=report)
        if report is not None:
            context.update(self._report(report, expires_at_s or 0.0))
        return _ENV.get_template("share.html").render(context)

    def _report(self, report: Report, expires_at_s: float) -> dict[str, Any]:
        patient = masked_id(report.source.patient_id)
        return {
            "patient": patient if self.ui.share_identifier == "masked_id" else None,
            "analysed": self._when(report.created_at),
            "expires": self._when(datetime.fromtimestamp(expires_at_s, UTC)),
            "image_url": f"/share/{self.token}/image.png" if has_image(report) else None,
            "findings": [self._finding(f) for f in report.findings],
        }

    def _finding(self, finding: Finding) -> FindingRow:
        meaning = finding.concept.meaning
        name = catalogue(self.lang).get(f"finding.{meaning}", meaning)
        if not finding.assessed or finding.present is None:
            return FindingRow(name, self.t("result.not_assessed"), None, "not-assessed")
        state = "present" if finding.present else "absent"
        probability = None
        if finding.probability is not None:
            probability = format_percent(finding.probability, "#0.#%", locale=self.lang)
        return FindingRow(name, self.t(f"result.{state}"), probability, state)

    def _when(self, moment: datetime) -> str:
        return format_datetime(moment, "medium", tzinfo=UTC, locale=self.lang) + " UTC"
