""""Not assessed" as a first-class answer, and the out-of-distribution verdict.

A refusal (4xx) is for input that is not what a route takes at all. An input of the
right kind that a model cannot judge (unlike its training data, no lungs in the
volume, no tissue on the slide, no reference interval for this patient) gets
findings that are *not assessed*, each with a stable reason code and a human
message, and is written back as such: never a present/absent it cannot stand by."""

from __future__ import annotations

import enum

from pydantic import BaseModel


class NotAssessedReason(enum.StrEnum):
    out_of_distribution = "out_of_distribution"  # unlike the model's training data
    blank_image = "blank_image"  # (near-)constant pixels: nothing to judge
    not_chest = "not_chest"  # the image does not look like a chest radiograph
    unsupported_view = "unsupported_view"  # e.g. a lateral view for a frontal-only model
    no_lungs = "no_lungs"  # a CT volume without aerated lung
    no_tissue = "no_tissue"  # a slide without tissue
    no_reference_interval = "no_reference_interval"  # none for this age/sex
    sex_unknown = "sex_unknown"  # a sex-specific interval and no usable sex
    age_unknown = "age_unknown"  # an age-dependent interval and no age
    model_not_applicable = "model_not_applicable"  # outside the model's population


class OodStatus(enum.StrEnum):
    in_distribution = "in_distribution"
    out_of_distribution = "out_of_distribution"
    uncalibrated = "uncalibrated"  # the model's card has no reference: no gate ran


class OodPolicy(enum.StrEnum):
    not_assessed = "not_assessed"  # out of distribution: findings not assessed
    warn = "warn"  # a site's choice: scored, with a prominent warning


class OodVerdict(BaseModel):
    """The gate's answer for one input: its score against the model's reference,
    the threshold it was compared with, and what followed."""

    status: OodStatus
    score: float | None = None
    threshold: float | None = None
    method: str | None = None
    policy: OodPolicy = OodPolicy.not_assessed


class NotAssessed(BaseModel):
    """Why an input's findings were not assessed."""

    reason: NotAssessedReason
    message: str
