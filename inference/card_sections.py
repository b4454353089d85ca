"""The typed section of a model card for each pipeline, built once at load from the
card's front matter and the model's config.pbtxt, and checked against the config
(output names, label and feature counts, tile size), so that a mismatch keeps the
model out of service instead of failing each request."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Label(_Section):
    """One output of the model as a coded concept, with its decision threshold."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    name: str
    scheme: str
    code: str  # an unquoted SNOMED CT code reads as a number in YAML: kept as text
    meaning: str
    threshold: float = Field(ge=0.0, le=1.0)


class WsiTiling(_Section):
    """The front matter's `wsi:` block: the tiles the model was trained on."""

    tile_px: int = Field(gt=0)
    mpp: float = Field(gt=0.0)


class RadiographView(enum.StrEnum):
    """A radiograph's projection, as DICOM's ViewPosition names it."""

    PA = "PA"  # postero-anterior
    AP = "AP"  # antero-posterior
    LL = "LL"  # left lateral
    RL = "RL"  # right lateral
    LATERAL = "LATERAL"  # lateral, side not stated
    OBLIQUE = "OBLIQUE"

    @property
    def frontal(self) -> bool:
        return self in (RadiographView.PA, RadiographView.AP)


FRONTAL_VIEWS = (RadiographView.PA, RadiographView.AP)


class CxrSection(_Section):
    labels: tuple[Label, ...] = Field(min_length=1)  # in the order of the scores
    scores_output: str  # one score per label
    scores_are_probabilities: bool  # False: logits, the pipeline applies the sigmoid
    cam_output: str | None = None  # class activation maps, one per label
    views: tuple[RadiographView, ...] = Field(FRONTAL_VIEWS, min_length=1)  # supported


class OodSetResult(_Section):
    """The gate on one out-of-distribution set: how many of its images it caught."""

    images: int = Field(gt=0)
    detected: int = Field(ge=0)
    rate: float = Field(ge=0.0, le=1.0)
    source: str  # what the set is made of


class OodSection(_Section):
    """The front matter's `ood:` block: the model's out-of-distribution gate
    (inference/ood.py), its reference file and what it was measured to do."""

    method: str
    file: str  # the reference, relative to the model folder; its sha256 is in `files`
    threshold: float = Field(gt=0.0)
    target_false_rejection_rate: float = Field(gt=0.0, le=0.05)
    false_rejection_rate: float = Field(ge=0.0, le=1.0)  # measured on `heldout_images`
    fit_images: int = Field(gt=0)
    calibration_images: int = Field(gt=0)  # the threshold's split
    heldout_images: int = Field(gt=0)
    dataset: str  # where the in-distribution images came from
    detection: dict[str, OodSetResult] = Field(default_factory=dict)


class CtParameters(_Section):
    """config.pbtxt `parameters` (string values) a CT model may set."""

    model_config = ConfigDict(extra="ignore")

    spacing_mm: float = Field(3.0, gt=0.0)  # isotropic voxels of the model grid
    overlap: float = Field(0.25, ge=0.0, lt=1.0)  # sliding-window overlap
    sw_batch_size: int = Field(4, ge=1)  # windows per batcher request
    min_lesion_ml: float = Field(0.5, ge=0.0)  # smaller components are dropped
    # Less aerated lung inside the body than this (both sides together): not a chest
    # CT, or the lungs are out of the field of view; the finding is not assessed.
    # 500 mL is far under an adult's lungs (4-6 L) and over a head's sinuses and airways.
    min_lung_ml: float = Field(500.0, ge=0.0)


class CtSection(CtParameters):
    model_config = ConfigDict(extra="forbid")

    label: Label
    roi_voxels: int = Field(gt=0)  # the window's side, from the input dims


class WsiSection(WsiTiling):
    label: Label
    probabilities_output: str


class Population(_Section):
    """Whom a model was trained on (the card's `population:`); outside it the model
    does not apply and its findings are not assessed."""

    min_age_y: float | None = Field(default=None, ge=0.0)
    max_age_y: float | None = Field(default=None, gt=0.0)
    description: str | None = None


class LabsSection(_Section):
    label: Label  # threshold on 1 - p: the alarm level
    features: tuple[str, ...] = Field(min_length=1)  # the input's columns, in order
    transform: str | None = None
    population: Population | None = None

    @property
    def p_threshold(self) -> float:
        return 1.0 - self.label.threshold


def describe(exc: ValidationError) -> str:
    """A pydantic error in one line per field: `labels.0.threshold: Input should be ...`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'front matter'}: {error['msg']}"
        for error in exc.errors()
    )


def _first_label(labels: tuple[Label, ...]) -> Label:
    if not labels:
        raise ValueError("the card lists no labels")
    return labels[0]


def _last_dim(specs: Iterable[Any], name: str) -> int | None:
    """The last dim of the named tensor in config.pbtxt (None: not listed)."""
    for spec in specs:
        if spec.name == name:
            return int(spec.dims[-1]) if len(spec.dims) else None
    return None


def _check_outputs(config: Any, names: Iterable[str | None]) -> None:
    """Each named output exists in config.pbtxt, when the config lists its outputs."""
    listed = {spec.name for spec in config.output}
    missing = sorted(n for n in names if n is not None and listed and n not in listed)
    if missing:
        raise ValueError(f"outputs {missing} are not in config.pbtxt (it has {sorted(listed)})")


def _first_input(config: Any) -> Any:
    if not config.input:
        raise ValueError("config.pbtxt lists no input")
    return config.input[0]


def cxr_section(
    labels: tuple[Label, ...],
    outputs: dict[str, str],
    config: Any,
    views: tuple[RadiographView, ...] | None = None,
) -> CxrSection:
    own_sigmoid = "probabilities" in outputs
    scores = outputs["probabilities"] if own_sigmoid else outputs.get("logits", "logits")
    section = CxrSection(
        labels=labels,
        scores_output=scores,
        scores_are_probabilities=own_sigmoid,
        cam_output=outputs.get("cam"),
        views=views or FRONTAL_VIEWS,
    )
    _check_outputs(config, [section.scores_output, section.cam_output])
    width = _last_dim(config.output, scores)
    if width is not None and width > 0 and width != len(labels):
        raise ValueError(
            f"output {scores!r} gives {width} scores; the card has {len(labels)} labels"
        )
    return section


def ct_section(labels: tuple[Label, ...], config: Any) -> CtSection:
    try:
        params = CtParameters.model_validate(
            {key: value.string_value for key, value in config.parameters.items()}
        )
    except ValidationError as exc:
        raise ValueError(f"config.pbtxt parameters: {describe(exc)}") from None
    sw_batch = params.sw_batch_size
    if config.max_batch_size > 0:  # a request never carries more than a batch
        sw_batch = min(sw_batch, int(config.max_batch_size))
    dims = _first_input(config).dims
    return CtSection(
        **{**params.model_dump(), "sw_batch_size": sw_batch},
        label=_first_label(labels),
        roi_voxels=int(dims[-1]) if len(dims) else 0,
    )


def wsi_section(
    labels: tuple[Label, ...], outputs: dict[str, str], tiling: WsiTiling | None, config: Any
) -> WsiSection:
    if tiling is None:
        raise ValueError("the card needs `wsi: {tile_px, mpp}`, the tiles the model was trained on")
    section = WsiSection(
        **tiling.model_dump(),
        label=_first_label(labels),
        probabilities_output=outputs.get("probabilities", "probabilities"),
    )
    _check_outputs(config, [section.probabilities_output])
    dims = _first_input(config).dims
    if len(dims) and dims[0] > 0 and dims[0] != section.tile_px:
        raise ValueError(f"wsi.tile_px is {section.tile_px}; the model's input takes {dims[0]} px")
    return section


def labs_section(
    labels: tuple[Label, ...],
    features: tuple[str, ...] | None,
    transform: str | None,
    config: Any,
    population: Population | None = None,
) -> LabsSection:
    if not features:
        raise ValueError("the card needs `features`, the analytes of the input in order")
    width = _last_dim(config.input, _first_input(config).name)
    if width is not None and width > 0 and width != len(features):
        raise ValueError(f"the card lists {len(features)} features; the input takes {width}")
    return LabsSection(
        label=_first_label(labels), features=features, transform=transform, population=population
    )
