"""The recipe's model folder: config.pbtxt, labels.txt and the model card rendered from
the recipe, its thresholds and its held-out metrics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from google.protobuf import text_format

from aidx.inference.model_card import Label
from aidx.inference.repository import parse_config
from aidx.pipelines.cxr import card as card_md
from aidx.pipelines.cxr.model import LABELS, POOL_SHARPNESS
from aidx.pipelines.cxr.train_eval import HIT_DILATION_MODEL_PX
from aidx.pipelines.cxr.train_recipe import (
    LOCALISATION_POS_WEIGHT,
    LOCALISATION_WEIGHT,
    PREVALENCE,
    Recipe,
    split_seed,
)
from aidx.pipelines.onnx_export import ONNX_OPSET

LABEL_CODES = {"Pneumonia": "233604007", "Cardiomegaly": "8186001"}  # SNOMED CT


def _r(x: float) -> float:
    return round(float(x), 4)


def _library_versions() -> str:
    import onnx
    import onnxruntime

    return (
        f"torch {torch.__version__}, numpy {np.__version__}, onnx {onnx.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def render_card(
    *,
    sha256: str,
    size_bytes: int,
    recipe: Recipe,
    thresholds: dict[str, float],
    metrics: dict,
    heldout_seed: int,
    parameters: int,
    wall_s: float,
) -> str:
    """The model card: YAML front matter the service parses, then prose."""
    m = metrics
    labels = tuple(
        Label(name=n, scheme="SCT", code=LABEL_CODES[n], meaning=n, threshold=thresholds[n])
        for n in LABELS
    )
    front = card_md.front_matter(
        sha256,
        labels,
        {
            "heldout_images": m["n"],
            "seed": heldout_seed,
            **{
                key: {n: _r(m[key][n]) for n in LABELS}
                for key in ("auroc", "sensitivity", "specificity")
            },
            "localisation_hit_rate": _r(m["localisation_hit_rate"]),
        },
        version=recipe.version,
    )
    metric_rows = "".join(
        f"| {n} | {m['n_positive'][n]} / {m['n']} | {_r(m['auroc'][n])} | {thresholds[n]} "
        f"| {_r(m['sensitivity'][n])} | {_r(m['specificity'][n])} |\n"
        for n in LABELS
    )
    return card_md.render_card(
        front,
        parameters=parameters,
        opset=ONNX_OPSET,
        size_mb=size_bytes / 1e6,
        sharpness=POOL_SHARPNESS,
        prev_pneumonia=PREVALENCE["Pneumonia"],
        prev_cardiomegaly=PREVALENCE["Cardiomegaly"],
        train_images=recipe.train_images,
        train_seed=split_seed(recipe.seed, "train"),
        val_images=recipe.val_images,
        val_seed=split_seed(recipe.seed, "val"),
        heldout_images=m["n"],
        heldout_seed=heldout_seed,
        seed=recipe.seed,
        epochs=recipe.epochs,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        batch=recipe.batch,
        threads=recipe.threads,
        loc_weight=LOCALISATION_WEIGHT,
        loc_pos_weight=LOCALISATION_POS_WEIGHT,
        wall_min=wall_s / 60,
        versions=_library_versions(),
        metric_rows=metric_rows,
        dilation=HIT_DILATION_MODEL_PX,
        hit_rate=_r(m["localisation_hit_rate"]),
        hit_rate_undilated=_r(m["localisation_hit_rate_undilated"]),
        n_pneumonia=m["n_positive"]["Pneumonia"],
    )


CONFIG_PBTXT = """\
name: "cxr_pneumonia"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [
  {
    name: "image"
    data_type: TYPE_FP32
    dims: [ 1, 224, 224 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 2 ]
    label_filename: "labels.txt"
  },
  {
    name: "cam"
    data_type: TYPE_FP32
    dims: [ 2, 28, 28 ]
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 2000
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy {
    max_queue_size: 128
  }
}
instance_group [
  {
    count: 1
    kind: KIND_AUTO
  }
]
version_policy: { latest: { num_versions: 1 } }
"""
RECIPE_VERSION_POLICY = "version_policy: { latest: { num_versions: 1 } }"


def config_pbtxt(existing: Path) -> str:
    """The recipe's config.pbtxt, with the version_policy of the one already in the
    model folder when there is one: rerunning the recipe must not undo a repository's
    `specific: [1, 2]` (a candidate version 2 served in shadow beside 1)."""
    if not existing.is_file():
        return CONFIG_PBTXT
    config = parse_config(existing)
    if not config.HasField("version_policy"):
        return CONFIG_PBTXT
    policy = text_format.MessageToString(config.version_policy, as_one_line=True)
    return CONFIG_PBTXT.replace(RECIPE_VERSION_POLICY, f"version_policy: {{ {policy} }}")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_folder(
    out: Path,
    *,
    recipe: Recipe,
    thresholds: dict[str, float],
    metrics: dict,
    heldout_seed: int,
    parameters: int,
    wall_s: float,
) -> None:
    """config.pbtxt, labels.txt and card.md next to an exported <version>/model.onnx."""
    (out / "config.pbtxt").write_text(config_pbtxt(out / "config.pbtxt"))
    (out / "labels.txt").write_text("".join(f"{name}\n" for name in LABELS))
    onnx_path = out / str(recipe.version) / "model.onnx"
    card = render_card(
        sha256=sha256_file(onnx_path),
        size_bytes=onnx_path.stat().st_size,
        recipe=recipe,
        thresholds=thresholds,
        metrics=metrics,
        heldout_seed=heldout_seed,
        parameters=parameters,
        wall_s=wall_s,
    )
    (out / "card.md").write_text(card)
