"""Deterministic recipe for the demo lab anomaly model.

    python -m aidx.pipelines.labs.train --out models/labs_anomaly --seed 0

NHANES 2017-18 adults are split by a seeded permutation into train (60 %),
validation (20 %: the threshold) and held-out (20 %: the card's metrics). Each
person's panel is completed with synthetic analytes (`synthetic.complete_panels`).
The threshold on 1 - p is set so that 1 % of validation normal panels (a mix of
panel shapes: full, CMP+CBC, CMP, BMP, CBC) alarm. Held-out metrics are measured on
the exported ONNX file with onnxruntime, i.e. on what ships.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from aidx.inference.model_card import FrontMatter, Label, Pipeline, Population
from aidx.inference.model_card import render_card as render
from aidx.pipelines.labs.anomaly import (
    PanelAnomalyModel,
    export_onnx,
    tail_probability,
    to_features,
)
from aidx.pipelines.labs.catalogue import load_catalogue
from aidx.pipelines.labs.synthetic import (
    INJECTORS,
    People,
    complete_panels,
    load_nhanes,
    mask_to_shape,
)

FALSE_ALARM_RATE = 0.01
SHAPES: list[str | None] = [None, "cmp_cbc", "cmp", "bmp", "cbc"]
MAX_BATCH = 1024
MIN_AGE_Y = 18.0  # NHANES participants aged 18+: the model applies to adults only
POPULATION = "adults: NHANES 2017-18 participants aged 18+ (synthetic analytes drawn for adults)"
LABEL = {"scheme": "99AIDX", "code": "LAB-PANEL-ANOMALY", "meaning": "Lab panel anomaly"}


def model_features() -> list[str]:
    return [a.key for a in load_catalogue().analytes if a.model]


def _onnx_tail_p(session: ort.InferenceSession, panels: np.ndarray) -> np.ndarray:
    x = to_features(panels)
    d2 = session.run(["d2"], {"values": x})[0][:, 0]
    return tail_probability(d2.astype(np.float64), (~np.isnan(x)).sum(axis=1))


def _all_shapes(panels: np.ndarray, features: list[str]) -> np.ndarray:
    return np.concatenate([mask_to_shape(panels, features, s) for s in SHAPES])


def split(n: int, seed: int) -> dict[str, np.ndarray]:
    """The recipe's people indices: train 60 %, validation 20 %, held-out 20 %."""
    order = np.random.default_rng(seed).permutation(n)
    cut1, cut2 = int(0.6 * n), int(0.8 * n)
    return {"train": order[:cut1], "val": order[cut1:cut2], "heldout": order[cut2:]}


def panels_for(seed: int) -> tuple[People, np.ndarray]:
    """The NHANES adults and their completed [n, F] canonical panels (model features)."""
    people = load_nhanes()
    return people, complete_panels(people, model_features(), seed=1000 * seed + 1)


def train(out: Path, seed: int) -> dict[str, object]:
    started = time.perf_counter()
    features = model_features()
    people, panels = panels_for(seed)
    n = len(people.age_y)
    parts = split(n, seed)
    train_x, val_x, held_x = (panels[parts[k]] for k in ("train", "val", "heldout"))

    model = PanelAnomalyModel(random_state=seed).fit(to_features(train_x))
    data = export_onnx(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])

    # the exported graph must agree with the exact reference on partial panels
    probe = mask_to_shape(val_x[:200], features, "cmp")
    ref_d2, _ = model.score(to_features(probe))
    onnx_d2 = session.run(["d2"], {"values": to_features(probe)})[0][:, 0]
    max_rel_err = float(np.max(np.abs(onnx_d2 - ref_d2) / np.maximum(ref_d2, 1.0)))
    if max_rel_err > 1e-3:
        raise RuntimeError(f"ONNX graph disagrees with the reference: {max_rel_err:.2e}")

    p_val = _onnx_tail_p(session, _all_shapes(val_x, features))
    p_threshold = float(np.quantile(p_val, FALSE_ALARM_RATE))
    rng = np.random.default_rng(1000 * seed + 3)
    metrics: dict[str, object] = {
        "false_alarm_rate_target": FALSE_ALARM_RATE,
        "p_threshold": p_threshold,
        "onnx_vs_reference_max_rel_err": max_rel_err,
        "heldout_normal_panels": int(len(held_x)),
    }
    far = {}
    for shape in SHAPES:
        p = _onnx_tail_p(session, mask_to_shape(held_x, features, shape))
        far[shape or "full"] = round(float(np.mean(p < p_threshold)), 4)
    metrics["heldout_false_alarm_rate"] = far
    detection: dict[str, dict[str, float]] = {}
    for name, inject in INJECTORS.items():
        injected = inject(held_x, features, rng)
        detection[name] = {}
        for shape in (None, "cmp_cbc"):
            p = _onnx_tail_p(session, mask_to_shape(injected, features, shape))
            detection[name][shape or "full"] = round(float(np.mean(p < p_threshold)), 4)
    metrics["heldout_detection_rate"] = detection

    out.mkdir(parents=True, exist_ok=True)
    (out / "1").mkdir(exist_ok=True)
    (out / "1" / "model.onnx").write_bytes(data)
    (out / "config.pbtxt").write_text(config_pbtxt(len(features)))
    sha = hashlib.sha256(data).hexdigest()
    (out / "card.md").write_text(card(features, sha, 1.0 - p_threshold, metrics, n, seed))
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def config_pbtxt(features: int) -> str:
    return f"""name: "labs_anomaly"
platform: "onnxruntime_onnx"
max_batch_size: {MAX_BATCH}
input [
  {{ name: "values" data_type: TYPE_FP32 dims: [ {features} ] }}
]
output [
  {{ name: "d2" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "contributions" data_type: TYPE_FP32 dims: [ {features} ] }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 200
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy {{ max_queue_size: 4096 }}
}}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""


def card(
    features: list[str],
    sha: str,
    threshold: float,
    metrics: dict[str, object],
    people: int,
    seed: int,
) -> str:
    front = FrontMatter(
        name="labs_anomaly",
        version=1,
        pipeline=Pipeline.labs,
        demo_weights=True,
        files={"1/model.onnx": sha},
        outputs={"score": "d2", "contributions": "contributions"},
        features=tuple(features),
        transform="natural log of the canonical-unit value; NaN where absent",
        population=Population(min_age_y=MIN_AGE_Y, description=POPULATION),
        labels=(Label(name="anomaly", **LABEL, threshold=threshold),),
        metrics=metrics,
    )
    return render(
        front,
        f"""\
# labs_anomaly: multivariate lab panel anomaly score (demo weights)

**Demo weights, partly synthetic data: not for clinical use.**

Intended use: a second opinion beside the rule-based checks of `aidx.pipelines.labs`,
holding for technician review a panel whose analytes are jointly implausible for one
person (specimen contamination, discordant channels, gross single errors), with each
analyte's contribution as the explanation. It never releases or calls a result alone.

Model: a robust Gaussian (scikit-learn MinCovDet) over the log canonical values of
{len(features)} analytes, exported with skl2onnx (a registered converter). Missing
analytes are filled with their conditional mean inside the graph, so any subset of
the analytes can be scored; the score is the observed panel's Mahalanobis distance,
turned into a tail probability with as many degrees of freedom as analytes observed.

Training data: {people} NHANES 2017-18 participants aged 18+ with HbA1c, total and HDL
cholesterol measured (real values, the `nhanes` package's table), split 60/20/20 by a
seeded permutation (seed {seed}). Every other analyte is synthetic, drawn from a
designed latent model (`aidx.pipelines.labs.synthetic`): its correlations are
plausible physiology, not learned from patients. Real-world performance is unknown.

Population: adults (18 years and over, `population.min_age_y`). The labs pipeline
does not score the panel of a younger patient, or of one whose age is unknown: the
specimen says "anomaly model not applicable" and carries no anomaly score.

Metrics (held-out people, measured on this ONNX file): the threshold was set on the
validation people for a {FALSE_ALARM_RATE:.0%} false-alarm rate over a mix of panel
shapes; `heldout_false_alarm_rate` is per panel shape, `heldout_detection_rate` per
injected anomaly on full and CMP+CBC panels (see the front matter).

Retrain: `python -m aidx.pipelines.labs.train --out models/labs_anomaly --seed {seed}`.
""",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models/labs_anomaly"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(train(args.out, args.seed), indent=2))


if __name__ == "__main__":
    main()
