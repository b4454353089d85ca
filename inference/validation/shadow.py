"""The validation report's shadow sections: the serving version and its shadow (candidate)
version, each scored through the serving path on the same labelled dataset, compared
item by item (agreement at each version's own card threshold, Pearson's and Spearman's
correlation of the scores, each version's AUROC with its bootstrap interval and the
paired difference) and by compute time; and the comparisons stored in production
(inference/shadow_store.py) summarised beside them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the headless backend
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from aidx.inference.shadow_store import PairSummary  # noqa: E402
from aidx.inference.validation import metrics as m  # noqa: E402
from aidx.inference.validation.evaluate import Labelled  # noqa: E402
from aidx.inference.validation.html import estimate_text, fmt, png_base64  # noqa: E402
from aidx.inference.validation.report import Estimate, Figure, Interval, Section, Table  # noqa: E402

Row = list[bool | str | float | int | None]


@dataclass
class ComputeTimer:
    """A batcher observer that keeps each batch's size and compute time: one version's
    latency over a validation run."""

    batches: int = 0
    items: int = 0
    compute_s: float = 0.0
    wall_s: float = 0.0  # the whole scoring pass, set by the caller
    sizes: list[int] = field(default_factory=list)

    def queue_depth(self, model: str, depth: int) -> None:
        return None

    def batch_done(
        self, model: str, size: int, compute_s: float, queue_waits_s: list[float]
    ) -> None:
        self.batches += 1
        self.items += size
        self.compute_s += compute_s
        self.sizes.append(size)

    def row(self, version: int, scored: int) -> Row:
        per_item = self.compute_s / self.items * 1e3 if self.items else None
        per_batch = self.compute_s / self.batches * 1e3 if self.batches else None
        wall = self.wall_s / scored * 1e3 if scored else None
        return [f"v{version}", self.batches, self.items, _ms(per_batch), _ms(per_item), _ms(wall)]


@dataclass(frozen=True)
class Version:
    """One version as scored on the dataset: its items joined to the labels, its
    card's thresholds and its compute times."""

    number: int
    data: Labelled
    thresholds: dict[str, float]
    timer: ComputeTimer


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def paired(serving: Version, shadow: Version, output: str) -> tuple[np.ndarray, ...]:
    """The items both versions scored for `output` and that are labelled for it:
    (serving scores, shadow scores, labels)."""
    theirs = {item.id: item.scores.get(output) for item in shadow.data.items}
    xs, ys, labels = [], [], []
    for item, row in zip(serving.data.items, serving.data.rows, strict=True):
        y = theirs.get(item.id)
        if y is None or output not in item.scores or output not in row.labels:
            continue
        xs.append(item.scores[output])
        ys.append(y)
        labels.append(row.labels[output])
    return np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64), np.array(labels)


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    return _round(stats.pearsonr(x, y)[0]), _round(stats.spearmanr(x, y)[0])


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    return m.auroc(scores, labels) if 0 < labels.sum() < len(labels) else None


def _estimate(value: float | None, ci: tuple[float, float] | None) -> Estimate:
    return Estimate(
        value=_round(value),
        ci95=None if ci is None else Interval(low=round(ci[0], 4), high=round(ci[1], 4)),
    )


def output_row(output: str, serving: Version, shadow: Version, *, seed: int, resamples: int) -> Row:
    """One output's comparison: n, agreement (k/n) at each version's own threshold,
    Pearson's r, Spearman's rho, each AUROC [CI] and the paired difference [CI]."""
    x, y, labels = paired(serving, shadow, output)
    x_present = x >= serving.thresholds[output]
    y_present = y >= shadow.thresholds.get(output, serving.thresholds[output])
    agree = int((x_present == y_present).sum())

    def statistics(idx: np.ndarray) -> dict[str, float | None]:
        a, b = _auroc(x[idx], labels[idx]), _auroc(y[idx], labels[idx])
        return {
            "serving": a,
            "shadow": b,
            "difference": None if a is None or b is None else b - a,
        }

    cis = m.bootstrap_cis(statistics, len(x), seed=seed, resamples=resamples)
    point = statistics(np.arange(len(x)))
    pearson, spearman = _correlations(x, y)
    return [
        output,
        len(x),
        f"{agree}/{len(x)} ({fmt(agree / len(x) if len(x) else None)})",
        int((x_present & ~y_present).sum()),
        int((~x_present & y_present).sum()),
        pearson,
        spearman,
        *(estimate_text(_estimate(point[k], cis.get(k))) for k in ("serving", "shadow")),
        estimate_text(_estimate(point["difference"], cis.get("difference"))),
    ]


OUTPUT_COLUMNS = [
    "output", "n (both scored)", "agreement", "serving only present", "shadow only present",
    "Pearson r", "Spearman rho", "AUROC serving [95% CI]", "AUROC shadow [95% CI]",
    "AUROC shadow - serving [95% CI]",
]  # fmt: skip
LATENCY_COLUMNS = [
    "version", "batches", "items", "compute ms / batch", "compute ms / item",
    "scoring ms / item (wall)",
]  # fmt: skip


def scatter_figure(serving: Version, shadow: Version, outputs: Sequence[str]) -> Figure:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for output in outputs:
        x, y, _ = paired(serving, shadow, output)
        ax.scatter(x, y, s=10, alpha=0.6, label=output)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel=f"v{serving.number} score", ylabel=f"v{shadow.number} score")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    return Figure(title="Serving vs shadow scores, per item", png_base64=png_base64(fig))


def comparison_section(serving: Version, shadow: Version, *, seed: int, resamples: int) -> Section:
    """The serving and shadow versions on this report's dataset."""
    outputs = [o for o in serving.thresholds if o in shadow.thresholds]
    rows = [output_row(o, serving, shadow, seed=seed, resamples=resamples) for o in outputs]
    latency = [
        serving.timer.row(serving.number, len(serving.data.items)),
        shadow.timer.row(shadow.number, len(shadow.data.items)),
    ]
    return Section(
        key="shadow",
        title=f"Shadow: v{shadow.number} beside serving v{serving.number}",
        text=(
            f"Both versions scored the same dataset through the serving path, one after the "
            f"other. Agreement: present/absent the same, each at its own card's threshold. "
            f"AUROC intervals: percentile bootstrap over the items both scored ({resamples} "
            f"resamples, seed {seed}; the difference is paired). Compute: the model's run "
            f"per batch, as the batcher measured it; wall: the whole pass per item."
        ),
        tables=[
            Table(columns=OUTPUT_COLUMNS, rows=rows),
            Table(columns=LATENCY_COLUMNS, rows=latency),
        ],
        figures=[scatter_figure(serving, shadow, outputs)],
    )


STORED_COLUMNS = [
    "serving", "shadow", "label", "items", "agreement", "both present", "serving only",
    "shadow only", "Pearson r (n)",
]  # fmt: skip
STORED_LATENCY_COLUMNS = [
    "serving", "shadow", "batches", "items", "serving compute ms / batch",
    "shadow compute ms / batch",
]  # fmt: skip


def _stored_rows(summary: PairSummary) -> list[Row]:
    rows: list[Row] = []
    for label, t in sorted(summary.labels.items()):
        r = t.correlation
        rows.append([
            f"v{summary.serving_version}", f"v{summary.shadow_version}", label, t.n,
            f"{t.agree}/{t.decided} ({fmt(t.agreement)})" if t.decided else "n/a",
            t.both_present, t.serving_only, t.shadow_only,
            f"{fmt(r)} ({t.n})",
        ])  # fmt: skip
    return rows


def stored_section(model: str, summaries: Sequence[PairSummary]) -> Section | None:
    """What production's shadow comparisons of `model` add up to (None: none stored)."""
    if not summaries:
        return None
    rows = [row for s in summaries for row in _stored_rows(s)]
    latency: list[Row] = [
        [
            f"v{s.serving_version}", f"v{s.shadow_version}", s.batches, s.items,
            _ms(s.serving_s / s.batches * 1e3 if s.batches else None),
            _ms(s.shadow_s / s.batches * 1e3 if s.batches else None),
        ]
        for s in summaries
    ]  # fmt: skip
    return Section(
        key="shadow_production",
        title=f"Shadow comparisons stored in production ({model})",
        text=(
            "Every served batch the shadow version also ran, added up per version pair: "
            "agreement at each version's own threshold and Pearson's r of the scores, each "
            "with its n; compute time per batch on the serving machine."
        ),
        tables=[
            Table(columns=STORED_COLUMNS, rows=rows),
            Table(columns=STORED_LATENCY_COLUMNS, rows=latency),
        ],
    )
