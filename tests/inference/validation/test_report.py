"""The report's data model, its sections and its self-contained HTML."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from aidx.inference.validation import evaluate as ev
from aidx.inference.validation.html import render_html
from aidx.inference.validation.report import (
    DatasetInfo,
    ModelInfo,
    Section,
    Table,
    ValidationReport,
    add_section,
)
from aidx.inference.validation.store import latest_html, read_latest, write_report


def small_report() -> ValidationReport:
    rng = np.random.default_rng(0)
    items, rows = [], {}
    for i in range(60):
        label = int(rng.random() < 0.5)
        sex = "F" if i % 2 else "M"
        items.append(
            ev.ScoredItem(
                f"i{i}",
                {"finding": float(np.clip(0.3 * label + rng.random() * 0.7, 0, 1))},
                {"sex": sex},
            )
        )
        rows[f"i{i}"] = ev.LabelRow({"finding": label}, {"age": str(20 + i)})
    data = ev.join(items, rows)
    thresholds = {"finding": 0.5}
    return ValidationReport(
        created=datetime(2026, 11, 30, 12, tzinfo=UTC),
        model=ModelInfo(name="m", version=1, pipeline="cxr", sha256=None, demo_weights=True),
        dataset=DatasetInfo(source="test", labels_file="labels.csv", items=60, scored=60),
        seed=0,
        resamples=100,
        outputs=ev.all_outputs(data, thresholds, seed=0, resamples=100),
        subgroups=ev.subgroups(data, thresholds, ev.SUBGROUP_ATTRIBUTES, seed=0, resamples=100),
    )


def test_subgroups_come_from_the_input_and_the_labels_file() -> None:
    report = small_report()
    groups = {(g.attribute, g.value): g.n for g in report.subgroups}
    assert groups[("sex", "F")] == groups[("sex", "M")] == 30
    assert groups[("age_band", "18-39")] == 20 and groups[("age_band", "40-64")] == 25
    assert sum(n for (a, _), n in groups.items() if a == "age_band") == 60


def test_add_section_appends_or_replaces_by_key() -> None:
    report = small_report()
    first = Section(key="shadow", title="Shadow", tables=[Table(columns=["a"], rows=[[1]])])
    second = Section(key="shadow", title="Shadow v2")
    once = add_section(report, first)
    assert [s.title for s in once.sections] == ["Shadow"] and report.sections == []
    assert [s.title for s in add_section(once, second).sections] == ["Shadow v2"]


def test_html_is_self_contained_with_the_plots(tmp_path: Path) -> None:
    report = add_section(small_report(), Section(key="extra", title="Shadow <b>comparison</b>"))
    page = render_html(report)
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 3  # ROC, reliability, AUROC per subgroup
    assert all(src.startswith("data:image/png;base64,") for src in images)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"https?:|//[a-z]|<script|<link|@import|url\(|src=\"[^\"]", text)
    assert "Shadow &lt;b&gt;comparison&lt;/b&gt;" in page  # text is escaped
    written = write_report(tmp_path / "validation", report)
    assert written.stamped_json.name == "20261130T120000Z.json"
    assert read_latest(tmp_path) == report and latest_html(tmp_path) == written.html
