"""The workspace's files: both message catalogues complete and translated, every
string the HTML and JS show named in them, every coded value the API sends labelled,
and nothing the strict CSP would block (no inline script, style or handler)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from aidx.inference.assessment import NotAssessedReason, OodStatus
from aidx.inference.feedback import ReasonCode, Verdict
from aidx.inference.report_index import ReviewFilter
from aidx.inference.settings import Role
from aidx.service.ownership import KINDS
from aidx.service.routes.ui import UI_DIR

LANGS = ("en", "vi")
SAME_IN_BOTH = {"lang.en", "lang.vi", "session.who"}  # names of languages, a pattern


def catalogue(lang: str) -> dict[str, str]:
    return dict(json.loads((UI_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8")))


def sources() -> dict[str, str]:
    files = [UI_DIR / "index.html", *sorted((UI_DIR / "js").glob("*.js"))]
    return {path.name: path.read_text(encoding="utf-8") for path in files}


def test_both_catalogues_have_the_same_keys_and_no_empty_or_untranslated_message() -> None:
    en, vi = catalogue("en"), catalogue("vi")
    assert sorted(en) == sorted(vi)
    assert all(v.strip() for v in [*en.values(), *vi.values()])
    untranslated = {k for k in en if en[k] == vi[k]} - SAME_IN_BOTH
    assert not untranslated
    for key in en:  # the same placeholders in both
        assert re.findall(r"\{\w+\}", en[key]) == re.findall(r"\{\w+\}", vi[key]), key


def test_every_key_the_html_and_js_use_is_in_the_catalogues() -> None:
    used: set[str] = set()
    for text in sources().values():
        used |= set(re.findall(r'data-i18n(?:-alt|-placeholder)?="([\w.]+)"', text))
        used |= set(re.findall(r'\bt\("([\w.]+)"', text))
    assert len(used) > 50
    assert used <= set(catalogue("en")), used - set(catalogue("en"))


@pytest.mark.parametrize(
    ("prefix", "codes"),
    [
        ("reason", [c.value for c in ReasonCode]),
        ("verdict", [v.value for v in Verdict]),
        ("na", [r.value for r in NotAssessedReason]),
        ("ood", [s.value for s in OodStatus]),
        ("review", [r.value for r in ReviewFilter]),
        ("role", [r.value for r in Role]),
        ("kind", list(KINDS)),
    ],
)
def test_every_coded_value_the_api_sends_has_a_label(prefix: str, codes: list[str]) -> None:
    for lang in LANGS:
        missing = {c for c in codes if f"{prefix}.{c}" not in catalogue(lang)}
        assert not missing, (lang, prefix, missing)


class _Page(HTMLParser):
    """The HTML's visible text outside an element that names its message, and any
    inline script, style or event handler."""

    VOID = {"meta", "link", "input", "br", "img"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []  # per open element: does it (or a parent) name a message
        self.loose_text: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names or tag == "style":
            self.inline.append(tag)
        self.inline += [n for n in names if n == "style" or n.startswith("on")]
        if tag not in self.VOID:
            self.stack.append("data-i18n" in names or any(self.stack[-1:]))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if data.strip() and not any(self.stack[-1:]):
            self.loose_text.append(data.strip())


def test_the_page_shows_no_string_outside_the_catalogues_and_nothing_inline() -> None:
    page = _Page()
    page.feed(sources()["index.html"])
    assert page.loose_text == []
    assert page.inline == []


def test_the_scripts_never_write_html() -> None:
    for name, text in sources().items():
        if name.endswith(".js"):  # text and DOM nodes only: no markup from data
            assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|eval\(", text), name
