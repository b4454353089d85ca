"""The typed model card: each shipped card loads with its pipeline's section; a bad
card keeps its model out of service with a reason that names the field; the one
renderer round-trips through the parser."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from aidx.inference.errors import ModelUnavailable
from aidx.inference.model_card import (
    CardError,
    FrontMatter,
    Label,
    Pipeline,
    WsiTiling,
    card_from,
    parse_card_text,
    render_card,
)
from aidx.inference.repository import load_entry, parse_config
from aidx.inference.serving import ModelService, ModelState
from tests.conftest import MODELS, make_settings


def copy_model(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / "models" / name
    shutil.copytree(MODELS / name, directory)
    return directory


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


# --- valid cards: one per pipeline -------------------------------------------------


def test_the_cxr_card_gives_labels_and_output_names() -> None:
    card = load_entry(MODELS / "cxr_pneumonia").card
    assert card is not None and card.pipeline is Pipeline.cxr
    assert card.ct is None and card.wsi is None and card.labs is None
    cxr = card.cxr
    assert cxr is not None
    assert [(lab.name, lab.code) for lab in cxr.labels] == [
        ("Pneumonia", "233604007"),
        ("Cardiomegaly", "8186001"),
    ]
    assert all(0 < lab.threshold < 1 for lab in cxr.labels)
    assert (cxr.scores_output, cxr.scores_are_probabilities, cxr.cam_output) == (
        "logits",
        False,
        "cam",
    )


def test_the_ct_card_gives_the_window_from_config_pbtxt() -> None:
    card = load_entry(MODELS / "ct_pneumonia").card
    assert card is not None and card.ct is not None
    ct = card.ct
    assert (ct.roi_voxels, ct.spacing_mm, ct.overlap, ct.sw_batch_size) == (64, 3.0, 0.25, 4)
    assert ct.min_lesion_ml == 0.5 and ct.label.code == "233604007"


def test_the_wsi_card_gives_tile_size_and_resolution() -> None:
    card = load_entry(MODELS / "wsi_tiles").card
    assert card is not None and card.wsi is not None
    wsi = card.wsi
    assert (wsi.tile_px, wsi.mpp, wsi.probabilities_output) == (256, 0.5, "probabilities")
    assert wsi.label.code == "108369006" and 0 < wsi.label.threshold < 1


def test_the_labs_card_gives_features_and_the_alarm_level() -> None:
    card = load_entry(MODELS / "labs_anomaly").card
    assert card is not None and card.labs is not None
    labs = card.labs
    assert len(labs.features) == 27 and labs.features[0] == "sodium"
    assert labs.p_threshold == pytest.approx(1 - labs.label.threshold)
    assert labs.transform and "log" in labs.transform


def test_the_sw_batch_never_exceeds_the_model_batch(tmp_path: Path) -> None:
    directory = copy_model(tmp_path, "ct_pneumonia")
    edit(directory / "config.pbtxt", 'string_value: "4"', 'string_value: "64"')
    card = load_entry(directory, verify=False).card
    assert card is not None and card.ct is not None and card.ct.sw_batch_size == 8


# --- bad cards: out of service, with the reason --------------------------------------

BAD_CARDS = [
    # (model, file, old, new, what the reason says)
    ("wsi_tiles", "card.md", "wsi:\n  tile_px: 256\n  mpp: 0.5\n", "", "wsi: {tile_px, mpp}"),
    ("wsi_tiles", "card.md", "mpp: 0.5", "mpp: -0.5", "wsi.mpp: Input should be greater than 0"),
    ("wsi_tiles", "card.md", "mpp: 0.5", "mpp: fine", "wsi.mpp: Input should be a valid number"),
    ("wsi_tiles", "card.md", "tile_px: 256", "tile_px: 224", "input takes 256 px"),
    ("cxr_pneumonia", "card.md", "threshold: 0.2635", "threshold: 26.35", "labels.0.threshold"),
    ("cxr_pneumonia", "card.md", 'code: "8186001", ', "", "labels.1.code: Field required"),
    ("cxr_pneumonia", "card.md", "version: 1\n", "", "version: Field required"),
    ("cxr_pneumonia", "card.md", "pipeline: cxr", "pipeline: cxr2", "pipeline: Input should be"),
    ("cxr_pneumonia", "card.md", "cam: cam}", "cam: heat}", "outputs ['heat'] are not in"),
    ("cxr_pneumonia", "card.md", "labels:\n", "labels: [\n", "not valid YAML"),
    ("cxr_pneumonia", "card.md", "---\nname", "name", "no YAML front matter"),
    ("ct_pneumonia", "config.pbtxt", 'string_value: "0.25"', 'string_value: "1.5"', "overlap"),
    ("ct_pneumonia", "config.pbtxt", 'string_value: "3.0"', 'string_value: "3mm"', "spacing_mm"),
    ("ct_pneumonia", "card.md", "\nlabels:\n- name: Pneumonia", "\nx:\n- name: P", "no labels"),
    ("labs_anomaly", "card.md", "- sodium\n", "", "lists 26 features; the input takes 27"),
    ("labs_anomaly", "card.md", "\nfeatures:\n", "\nanalytes:\n", "needs `features`"),
]


@pytest.mark.parametrize(("model", "file", "old", "new", "reason"), BAD_CARDS)
def test_a_bad_card_keeps_the_model_out_of_service(
    tmp_path: Path, model: str, file: str, old: str, new: str, reason: str
) -> None:
    directory = copy_model(tmp_path, model)
    edit(directory / file, old, new)
    problem = load_entry(directory, verify=False).problem
    assert problem is not None and "invalid model card" in problem, problem
    assert reason in problem, problem
    assert str(directory / "card.md") in problem


def test_the_service_reports_the_card_s_reason(tmp_path: Path) -> None:
    directory = copy_model(tmp_path, "wsi_tiles")
    edit(directory / "card.md", "mpp: 0.5", "mpp: 0")
    service = ModelService(make_settings(tmp_path, model_repository=directory.parent))
    asyncio.run(service.start())
    served = service.models["wsi_tiles"]
    assert served.state is ModelState.unavailable
    assert "wsi.mpp: Input should be greater than 0" in (served.reason or "")
    assert service.ready is False
    asyncio.run(service.stop())


def test_a_model_configured_for_another_pipeline_is_refused(tmp_path: Path) -> None:
    from aidx.pipelines.wsi.analysis import tile_model

    settings = make_settings(
        tmp_path, enabled_models=["cxr_pneumonia"], pipeline_models={"wsi": "cxr_pneumonia"}
    )

    async def refused() -> ModelUnavailable:
        service = ModelService(settings)
        await service.start()
        try:
            with pytest.raises(ModelUnavailable, match="no `pipeline: wsi` section") as caught:
                tile_model(service)
        finally:
            await service.stop()
        return caught.value

    assert asyncio.run(refused()).code == "model_card_invalid"


# --- the renderer --------------------------------------------------------------------


@pytest.mark.parametrize("model", ["cxr_pneumonia", "ct_pneumonia", "wsi_tiles", "labs_anomaly"])
def test_each_shipped_card_round_trips_through_the_renderer(model: str) -> None:
    front, text = parse_card_text((MODELS / model / "card.md").read_text())
    rendered = render_card(front, text)
    assert parse_card_text(rendered) == (front, text)
    config = parse_config(MODELS / model / "config.pbtxt")
    assert card_from(*parse_card_text(rendered), config) == load_entry(MODELS / model).card


def test_the_renderer_writes_plain_yaml_and_keeps_extra_keys() -> None:
    front = FrontMatter(
        name="tiles",
        version=2,
        pipeline=Pipeline.wsi,
        files={"2/model.onnx": "0" * 64},
        wsi=WsiTiling(tile_px=224, mpp=0.25),
        labels=(Label(name="x", scheme="SCT", code="108369006", meaning="x", threshold=0.5),),
        metrics={"auroc": 0.9, "note": "a --- in a string"},
        license="CC-BY-4.0",  # type: ignore[call-arg]
    )
    text = render_card(front, "# tiles\n\nProse with a table:\n\n|---|---|\n")
    assert text.startswith("---\nname: tiles\nversion: 2\npipeline: wsi\n")
    assert "code: '108369006'" in text and "license: CC-BY-4.0" in text
    assert "features" not in text and "transform" not in text  # absent keys stay absent
    again, body = parse_card_text(text)
    assert again == front and body.endswith("|---|---|")


def test_the_renderer_refuses_an_invalid_front_matter() -> None:
    with pytest.raises(ValueError, match="threshold"):
        Label(name="x", scheme="SCT", code="1", meaning="x", threshold=2.0)
    with pytest.raises(CardError, match=re.escape("name: Field required")):
        parse_card_text("---\nversion: 1\n---\n")
