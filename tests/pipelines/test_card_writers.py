"""Every recipe and exporter that writes a card.md writes one the loader accepts, with
its pipeline's typed section, through the one renderer (inference/model_card.py)."""

from __future__ import annotations

from pathlib import Path

from aidx.inference.model_card import ModelCard, load_card
from aidx.inference.repository import parse_config

SHA = "ab" * 32


def load(tmp_path: Path, config: str, card: str) -> ModelCard:
    (tmp_path / "config.pbtxt").write_text(config)
    (tmp_path / "card.md").write_text(card)
    loaded = load_card(tmp_path / "card.md", parse_config(tmp_path / "config.pbtxt"))
    assert card.startswith(f"---\nname: {loaded.name}\n")
    assert loaded.files_sha256 == {"1/model.onnx": SHA}
    return loaded


def test_the_ct_recipe_writes_a_valid_card(tmp_path: Path) -> None:
    from aidx.pipelines.ct.card import render_card, render_config
    from aidx.pipelines.ct.train import Recipe

    heldout = {"scans": 20, "lesions": 39, "dice_global": 0.9, "dice_mean_positive_scans": 0.8,
               "lesion_sensitivity": 0.95, "false_positives_per_scan": 0.0}  # fmt: skip
    result = {"threshold": 0.3, "heldout": heldout, "minutes": 4.2}
    text = render_card(Recipe(), result, SHA, 460_000, "torch x")
    card = load(tmp_path, render_config(Recipe()), text)
    assert card.ct is not None and card.ct.label.threshold == 0.3
    assert card.ct.spacing_mm == Recipe().spacing_mm and card.ct.roi_voxels == 64
    assert card.metrics == {"heldout_scans": 20, "seed": 3, **heldout}
    assert "| Dice, all voxels pooled | 0.9 |" in card.text and "0.46 MB" in card.text


def test_the_cxr_recipe_writes_a_valid_card(tmp_path: Path) -> None:
    from aidx.pipelines.cxr.train_card import CONFIG_PBTXT, render_card
    from aidx.pipelines.cxr.train_recipe import Recipe

    per_label = {"Pneumonia": 0.9, "Cardiomegaly": 0.95}
    metrics = {"n": 100, "n_positive": {"Pneumonia": 50, "Cardiomegaly": 40},
               "auroc": per_label, "sensitivity": per_label, "specificity": per_label,
               "localisation_hit_rate": 0.9, "localisation_hit_rate_undilated": 0.8}  # fmt: skip
    text = render_card(
        sha256=SHA,
        size_bytes=580_000,
        recipe=Recipe(),
        thresholds={"Pneumonia": 0.26, "Cardiomegaly": 0.21},
        metrics=metrics,
        heldout_seed=3,
        parameters=132_050,
        wall_s=312.0,
    )
    card = load(tmp_path, CONFIG_PBTXT, text)
    assert card.cxr is not None and [lab.threshold for lab in card.cxr.labels] == [0.26, 0.21]
    assert card.cxr.cam_output == "cam" and card.metrics["auroc"] == per_label
    assert "132,050 parameters" in card.text and "| Pneumonia | 50 / 100 |" in card.text


def test_the_cxr_recipe_keeps_the_repositorys_version_policy(tmp_path: Path) -> None:
    """Rerun into the demo model's folder, the recipe keeps `specific: [1, 2]` (the
    shadow candidate stays loadable); into a new folder it writes its own policy."""
    from aidx.pipelines.cxr.train_card import CONFIG_PBTXT, config_pbtxt

    from ..conftest import MODELS

    committed = MODELS / "cxr_pneumonia" / "config.pbtxt"
    kept = tmp_path / "config.pbtxt"
    kept.write_text(config_pbtxt(committed))
    assert list(parse_config(kept).version_policy.specific.versions) == [1, 2]
    assert parse_config(kept) == parse_config(committed)
    assert config_pbtxt(tmp_path / "absent.pbtxt") == CONFIG_PBTXT
    assert parse_config(committed).version_policy.WhichOneof("policy_choice") == "specific"


def test_the_wsi_recipe_writes_a_valid_card(tmp_path: Path) -> None:
    from aidx.pipelines.wsi.train import CONFIG_PBTXT, Recipe, render_card

    metrics = {"auroc": 0.99, "sensitivity": 0.98, "specificity": 0.97, "n": 1000,
               "n_positive": 411, "split": "heldout synthetic tiles"}  # fmt: skip
    card = load(tmp_path, CONFIG_PBTXT, render_card(Recipe(), 0.33791, metrics, SHA, 50_001))
    assert card.wsi is not None and (card.wsi.tile_px, card.wsi.mpp) == (256, 0.5)
    assert card.wsi.label.threshold == 0.3379 and "p >= 0.3379" in card.text


def test_the_labs_recipe_writes_a_valid_card(tmp_path: Path) -> None:
    from aidx.pipelines.labs.train import card, config_pbtxt, model_features

    features = model_features()
    metrics = {"p_threshold": 0.0004, "heldout_false_alarm_rate": {"full": 0.0077}}
    text = card(features, SHA, 0.9996, metrics, 5172, 0)
    loaded = load(tmp_path, config_pbtxt(len(features)), text)
    assert loaded.labs is not None and list(loaded.labs.features) == features
    assert loaded.labs.p_threshold == 1 - 0.9996 and loaded.metrics == metrics
    assert "5172 NHANES 2017-18 participants" in loaded.text


def test_the_xrv_exporter_writes_a_valid_card(tmp_path: Path) -> None:
    from aidx.pipelines.cxr.xrv_export import CONFIG, XRV_LABELS, _card

    config = CONFIG.format(name="card", n=len(XRV_LABELS))
    untrained = load(tmp_path, config, _card("card", SHA, None))
    assert untrained.demo_weights and "UNTRAINED" in untrained.text
    assert untrained.cxr is not None and untrained.cxr.scores_are_probabilities
    assert [lab.name for lab in untrained.cxr.labels] == [n for n, _, _ in XRV_LABELS]
    trained = load(tmp_path, config, _card("card", SHA, Path("densenet.pt")))
    assert not trained.demo_weights and "UNTRAINED" not in trained.text
