"""The validation report as one self-contained HTML file: inline CSS, matplotlib
plots embedded as base64 PNG, no external resource of any kind."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; a file only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402

from aidx.inference.validation.report import (  # noqa: E402
    Estimate,
    Figure,
    OutputMetrics,
    RateEstimate,
    Section,
    SubgroupMetrics,
    Table,
    ValidationReport,
)

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} .no{color:#b00020;font-weight:600} .yes{color:#1b6e20}
img{max-width:100%} .demo{background:#fff3cd;padding:.5em 1em;border:1px solid #e0c46c}
"""


def png_base64(figure: MplFigure) -> str:
    """A matplotlib figure as base64 PNG (closed afterwards): for a `Figure` section."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def roc_figure(outputs: Sequence[OutputMetrics]) -> Figure:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for o in outputs:
        if o.roc:
            fpr, tpr = zip(*o.roc, strict=True)
            ax.plot(fpr, tpr, label=f"{o.output} (AUROC {fmt(o.auroc.value)})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return Figure(title="ROC curves", png_base64=png_base64(fig))


def reliability_figure(outputs: Sequence[OutputMetrics]) -> Figure:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for o in outputs:
        bins = [b for b in o.reliability if b.n]
        ax.plot(
            [b.mean_predicted for b in bins],
            [b.observed_rate for b in bins],
            marker="o",
            label=f"{o.output} (ECE {fmt(o.ece.value)})",
        )
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="mean predicted score", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return Figure(title="Reliability (calibration)", png_base64=png_base64(fig))


def subgroup_figure(groups: Sequence[SubgroupMetrics], output: str) -> Figure | None:
    """AUROC with its interval per subgroup (a forest plot), for one output."""
    points = []
    for g in groups:
        o = next((x for x in g.outputs if x.output == output), None)
        if o is not None and o.auroc.value is not None:
            points.append((f"{g.attribute}={g.value} (n={o.n})", o.auroc))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(points) + 1.0))
    for y, (_, est) in enumerate(points):
        ci = est.ci95
        if ci is not None:
            ax.plot([ci.low, ci.high], [y, y], c="tab:blue")
        ax.plot([est.value], [y], "o", c="tab:blue")
    ax.set_yticks(range(len(points)), [label for label, _ in points], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=f"AUROC, {output} (95% bootstrap CI)")
    return Figure(title=f"AUROC per subgroup: {output}", png_base64=png_base64(fig))


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def estimate_text(e: Estimate) -> str:
    text = fmt(e.value)
    if e.ci95 is not None:
        text += f" [{e.ci95.low:.4f}, {e.ci95.high:.4f}]"
    if isinstance(e, RateEstimate):
        text += f" ({e.k}/{e.n})"
    return text


def output_table(outputs: Sequence[OutputMetrics], first: str = "output") -> Table:
    columns = [first, "n", "positives", "threshold", "AUROC [95% CI]", "sensitivity", "specificity"]
    rows: list[list[bool | str | float | int | None]] = [
        [o.output, o.n, o.n_positive, fmt(o.threshold), estimate_text(o.auroc),
         estimate_text(o.sensitivity), estimate_text(o.specificity)]
        for o in outputs
    ]  # fmt: skip
    return Table(
        columns=[*columns, "ECE"],
        rows=[[*r, estimate_text(o.ece)] for r, o in zip(rows, outputs, strict=True)],
    )


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in table.rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: str | float | int | None) -> str:
    if value is True:
        return '<span class="yes">yes</span>'
    if value is False:
        return '<span class="no">NO</span>'
    return html.escape(fmt(value))


def _figures_html(figures: Iterable[Figure]) -> str:
    return "".join(
        f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{f.png_base64}">'
        f"<figcaption>{html.escape(f.title)}</figcaption></figure>"
        for f in figures
    )


def _section_html(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.text:
        parts.append(f"<p>{html.escape(section.text)}</p>")
    parts += [_table_html(t) for t in section.tables]
    parts.append(_figures_html(section.figures))
    return "".join(parts)


def built_in_sections(report: ValidationReport) -> list[Section]:
    """The report's own parts as sections: overall, card comparison, subgroups, extras."""
    d = report.dataset
    overall = Section(
        key="overall",
        title="Overall",
        text=(
            f"{d.scored} of {d.items} inputs scored ({d.source}); labels {d.labels_file}. "
            f"Not scored: {d.not_scored or 'none'}. Intervals: percentile bootstrap, "
            f"{report.resamples} resamples, seed {report.seed}. Sensitivity and specificity "
            "at the card's threshold (present when score >= threshold)."
        ),
        tables=[output_table(report.outputs)],
        figures=[roc_figure(report.outputs), reliability_figure(report.outputs)],
    )
    sections = [overall]
    if report.card_comparison:
        rows: list[list[bool | str | float | int | None]] = [
            [c.metric, fmt(c.card_value), estimate_text(c.measured), c.n, c.within_ci]
            for c in report.card_comparison
        ]
        columns = ["card metric", "card value", "measured [95% CI]", "n", "card value within CI"]
        sections.append(
            Section(
                key="card",
                title="Model card vs measured",
                tables=[Table(columns=columns, rows=rows)],
            )
        )
    if report.extra:
        rows = [[e.name, estimate_text(e.estimate), e.description] for e in report.extra]
        table = Table(columns=["metric", "value [95% CI]", "meaning"], rows=rows)
        sections.append(Section(key="extra", title="Pipeline metrics", tables=[table]))
    if report.subgroups:
        sections.append(_subgroup_section(report))
    return sections


def _subgroup_section(report: ValidationReport) -> Section:
    tables = []
    for g in report.subgroups:
        table = output_table(g.outputs)
        table.columns[0] = f"{g.attribute}={g.value}"
        tables.append(table)
    figures = [subgroup_figure(report.subgroups, o.output) for o in report.outputs]
    return Section(
        key="subgroups",
        title="Subgroups",
        text="Each subgroup's metrics with their counts; small groups have wide intervals.",
        tables=tables,
        figures=[f for f in figures if f is not None],
    )


def render_html(report: ValidationReport) -> str:
    m = report.model
    title = f"Validation of {m.name} v{m.version}"
    demo = (
        '<p class="demo">Demo weights: these numbers say the pipeline works on its own '
        "synthetic data, nothing about clinical performance.</p>"
        if m.demo_weights
        else ""
    )
    head = (
        f"<h1>{html.escape(title)}</h1>{demo}<p>pipeline {html.escape(m.pipeline)}, "
        f"sha256 {html.escape(m.sha256 or 'n/a')}, created {report.created.isoformat()}</p>"
    )
    body = "".join(_section_html(s) for s in [*built_in_sections(report), *report.sections])
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{head}{body}</body></html>\n"
    )
