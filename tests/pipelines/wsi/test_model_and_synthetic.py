"""The synthetic tissue, the pyramid writer and the shipped demo tile model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import tifffile
from typer.testing import CliRunner

from aidx.inference.repository import load_entry
from aidx.pipelines.wsi import synthetic
from aidx.pipelines.wsi.synthetic import Tissue
from aidx.pipelines.wsi.train import auroc, draw_tile
from tests.conftest import MODELS

from .conftest import Slides

MODEL_DIR = MODELS / "wsi_tiles"


def test_rendering_is_seamless_across_tiles() -> None:
    layout = synthetic.uniform_layout(Tissue.suspicious)
    whole = synthetic.render(0, 0, 512, 512, layout, seed=3, noise_seed=1).astype(int)
    parts = np.concatenate(
        [
            np.concatenate([synthetic.render(x, y, 256, 256, layout, seed=3) for x in (0, 256)], 1)
            for y in (0, 256)
        ],
        0,
    ).astype(int)
    assert np.percentile(np.abs(whole - parts), 99.9) < 20  # only the pixel noise differs


def test_suspicious_nuclei_are_darker_and_larger_than_normal() -> None:
    def nuclear_fraction(kind: Tissue) -> float:
        tile = synthetic.render(0, 0, 256, 256, synthetic.uniform_layout(kind), seed=4)
        return float((tile.astype(int).sum(-1) < 400).mean())

    assert nuclear_fraction(Tissue.suspicious) > 2 * nuclear_fraction(Tissue.normal)


def test_the_pyramid_is_tiled_jpeg_with_reduced_levels(slides: Slides) -> None:
    with tifffile.TiffFile(slides.tumour) as tif:
        pages = list(tif.pages)
        assert len(pages) == 3
        for i, page in enumerate(pages):
            assert page.is_tiled and page.tilewidth == 256 and page.compression == 7  # JPEG
            assert page.subfiletype == (1 if i else 0)
        assert "MPP = 0.5" in pages[0].description


def test_the_demo_model_is_small_verified_and_in_the_layout() -> None:
    entry = load_entry(MODEL_DIR)
    assert entry.problem is None, entry.problem
    assert entry.card is not None and entry.card.pipeline == "wsi" and entry.card.demo_weights
    assert entry.model_path.stat().st_size < 2 * 1024 * 1024
    assert "not for clinical use" in entry.card.text
    assert entry.card.metrics["auroc"] >= 0.95


def test_the_demo_model_separates_fresh_synthetic_tiles() -> None:
    """Tiles from a seed the recipe never used: the ONNX file as shipped."""
    drawn = [draw_tile(987_654, i) for i in range(96)]
    tiles = np.stack([t for t, _ in drawn])
    labels = np.array([label for _, label in drawn])
    session = ort.InferenceSession(str(MODEL_DIR / "1" / "model.onnx"))
    p = session.run(["probabilities"], {"tile": tiles})[0][:, 0]
    assert 20 < labels.sum() < 76
    assert auroc(p, labels) > 0.95


def test_cli_analyze_writes_report_geojson_and_heatmap(slides: Slides, tmp_path: Path) -> None:
    from aidx.service.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["wsi", "analyze", str(slides.tumour), "--out", str(out), "--repository", str(MODELS)],
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"report.json", "overlay.png", "regions.geojson"}
    assert "Demo weights" in result.output


def test_cli_analyze_fails_clearly_on_a_bad_slide(slides: Slides) -> None:
    from aidx.service.cli import app

    result = CliRunner().invoke(app, ["wsi", "analyze", str(slides.text)])
    assert result.exit_code == 1
    assert "unsupported_slide_format" in result.output
