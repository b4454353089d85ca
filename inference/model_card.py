"""The model card, typed: card.md is parsed and validated once, when the repository
entry is loaded, and every card writer renders through the same model.

On disk nothing changes: YAML front matter (name, version, pipeline, demo_weights,
files, outputs, labels, metrics; `wsi: {tile_px, mpp}` for a tile model, `features`
for the labs model, optional `views` for a CXR model, `ood:` once the model's
out-of-distribution gate is calibrated, `shadow:` a candidate version to run in
shadow) and markdown prose. A CT model's sliding-window settings stay in config.pbtxt
`parameters`; they are read here as well, not at each request.

From these the loader builds the typed section of the pipeline the card names
(`card.cxr`, `card.ct`, `card.wsi`, `card.labs`), so a pipeline reads typed fields
and never a dict or a silent default: a card that does not validate keeps its model
out of service, and the reason says why.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aidx.inference.card_sections import (
    CtSection,
    CxrSection,
    Label,
    LabsSection,
    OodSection,
    OodSetResult,
    Population,
    RadiographView,
    WsiSection,
    WsiTiling,
    ct_section,
    cxr_section,
    describe,
    labs_section,
    wsi_section,
)
from aidx.inference.errors import AidxError, ModelUnavailable

__all__ = [
    "CardError",
    "CtSection",
    "CxrSection",
    "FrontMatter",
    "Label",
    "LabsSection",
    "ModelCard",
    "OodSection",
    "OodSetResult",
    "Pipeline",
    "Population",
    "RadiographView",
    "WsiSection",
    "WsiTiling",
    "card_from",
    "load_card",
    "missing_section",
    "parse_card_text",
    "render_card",
]

# the front matter: "---" alone on the first line, YAML, "---" alone on a line, prose
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?$\n?(.*)\Z", re.S | re.M)


class CardError(AidxError):
    code = "model_card_invalid"


class Pipeline(enum.StrEnum):
    cxr = "cxr"
    ct = "ct"
    wsi = "wsi"
    labs = "labs"


class FrontMatter(BaseModel):
    """card.md's front matter, key for key as on disk (keys not named here are kept)."""

    model_config = ConfigDict(frozen=True, extra="allow", coerce_numbers_to_str=True)

    name: str
    version: int
    pipeline: Pipeline | None = None
    demo_weights: bool = False
    files: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256
    outputs: dict[str, str] = Field(default_factory=dict)  # role -> output name
    wsi: WsiTiling | None = None
    features: tuple[str, ...] | None = None
    transform: str | None = None
    population: Population | None = None  # labs: whom the model was trained on
    labels: tuple[Label, ...] = ()
    metrics: dict[str, Any] = Field(default_factory=dict)
    views: tuple[RadiographView, ...] | None = None  # a CXR model's; default PA and AP
    ood: OodSection | None = None  # the out-of-distribution gate, once calibrated
    shadow: int | None = Field(default=None, ge=1)  # a candidate version run in shadow


class ModelCard(BaseModel):
    """The validated card: the generic fields, the prose, and the typed section of
    the pipeline the card names (the other sections are None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int
    pipeline: Pipeline | None
    demo_weights: bool
    files_sha256: dict[str, str]
    labels: tuple[Label, ...]
    outputs: dict[str, str]
    metrics: dict[str, Any]
    text: str
    ood: OodSection | None = None
    shadow: int | None = None  # the candidate version this card's model shadows with
    cxr: CxrSection | None = None
    ct: CtSection | None = None
    wsi: WsiSection | None = None
    labs: LabsSection | None = None


def parse_card_text(text: str) -> tuple[FrontMatter, str]:
    """card.md's text -> (validated front matter, prose); CardError says what is wrong."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise CardError("card has no YAML front matter between '---' lines")
    try:
        meta = yaml.safe_load(match[1])
    except yaml.YAMLError as exc:
        raise CardError(f"the front matter is not valid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise CardError("the front matter is not a mapping of keys to values")
    try:
        return FrontMatter.model_validate(meta), match[2].strip()
    except ValidationError as exc:
        raise CardError(describe(exc)) from exc


def _section(front: FrontMatter, config: Any) -> dict[str, Any]:
    """{pipeline: its typed section}, checked against config.pbtxt; {} for none."""
    pipeline = front.pipeline
    try:
        if pipeline is Pipeline.cxr:
            return {"cxr": cxr_section(front.labels, front.outputs, config, front.views)}
        if pipeline is Pipeline.ct:
            return {"ct": ct_section(front.labels, config)}
        if pipeline is Pipeline.wsi:
            return {"wsi": wsi_section(front.labels, front.outputs, front.wsi, config)}
        if pipeline is Pipeline.labs:
            return {
                "labs": labs_section(
                    front.labels, front.features, front.transform, config, front.population
                )
            }
    except ValidationError as exc:
        raise CardError(f"{pipeline} section: {describe(exc)}") from exc
    except ValueError as exc:
        raise CardError(f"{pipeline} section: {exc}") from exc
    return {}


def _check_ood(front: FrontMatter) -> None:
    """The gate's reference file is one the card lists with its sha256."""
    if front.ood is not None and front.ood.file not in front.files:
        raise CardError(f"ood.file {front.ood.file!r} is not listed in `files` with its sha256")


def card_from(front: FrontMatter, text: str, config: Any) -> ModelCard:
    _check_ood(front)
    return ModelCard(
        name=front.name,
        version=front.version,
        pipeline=front.pipeline,
        demo_weights=front.demo_weights,
        files_sha256=front.files,
        labels=front.labels,
        outputs=front.outputs,
        metrics=front.metrics,
        text=text,
        ood=front.ood,
        shadow=front.shadow,
        **_section(front, config),
    )


def load_card(path: Path, config: Any) -> ModelCard:
    """Read and validate card.md against its model's config.pbtxt (a parsed
    ModelConfig). Any problem is a CardError naming the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(f"{path}: the card cannot be read: {exc}") from exc
    try:
        return card_from(*parse_card_text(text), config)
    except CardError as exc:
        raise CardError(f"{path}: invalid model card: {exc.message}") from exc


def render_card(front: FrontMatter, body: str) -> str:
    """card.md's text: the front matter as YAML (PyYAML, validated by the model the
    loader uses), then the markdown body."""
    meta = front.model_dump(mode="json", exclude_none=True)
    front_yaml = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front_yaml}---\n\n{body.strip()}\n"


def missing_section(model: str, pipeline: Pipeline) -> ModelUnavailable:
    """What a pipeline raises when the model it was given has no card section for it
    (e.g. AIDX_PIPELINE_MODELS names a model whose card names another pipeline)."""
    return ModelUnavailable(
        f"model {model!r} cannot serve the {pipeline} pipeline: its card has no "
        f"`pipeline: {pipeline}` section",
        code="model_card_invalid",
    )


def with_prose_section(body: str, title: str, section_text: str) -> str:
    """`body` with the prose section headed `title` (e.g. `## Drift reference`) replaced
    by `section_text`, or inserted before `## Limitations` (appended when there is
    none): how the calibration commands keep their part of a card's prose current."""
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.M | re.S)
    block = section_text.rstrip() + "\n\n"
    if pattern.search(body):
        return pattern.sub(lambda _: block, body, count=1)
    marker = re.search(r"^## Limitations", body, re.M)
    if marker is None:
        return body.rstrip() + "\n\n" + block
    return body[: marker.start()] + block + body[marker.start() :]
