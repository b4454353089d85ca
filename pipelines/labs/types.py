"""What goes into lab screening and what comes out (the JSON of POST /v1/labs/screen)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aidx.inference.assessment import NotAssessed, NotAssessedReason
from aidx.inference.reports import Coding, ModelRef


class Verdict(enum.StrEnum):
    release = "release"  # autoverify
    review = "review"  # a technician must look
    critical = "critical"  # call the clinician now


class ResultStatus(enum.StrEnum):
    """Whether a result could be screened at all; anything but `screened` is reported
    as such and never guessed."""

    screened = "screened"
    unknown_code = "unknown_code"
    unit_not_convertible = "unit_not_convertible"
    not_numeric = "not_numeric"
    impossible_value = "impossible_value"
    duplicate = "duplicate"


class Comparator(enum.StrEnum):
    """A value known only as beyond a limit (HL7 SN, FHIR Quantity.comparator)."""

    lt = "<"
    le = "<="
    gt = ">"
    ge = ">="


class Censored(enum.StrEnum):
    """Lab-specific reasons for a result not assessed, beside the engine's codes."""

    censored_value = "censored_value"  # a `<`/`>` value that straddles a limit


# why a result was not assessed: the engine's codes, a screening status, or censoring
NotAssessedCode: TypeAlias = NotAssessedReason | ResultStatus | Censored  # noqa: UP040


class LabResultIn(BaseModel):
    code: str = Field(min_length=1, max_length=64, description="LOINC code")
    value: float | str | None
    comparator: Comparator | None = Field(
        default=None, description="the value is a limit: < <= > >= (e.g. troponin <3)"
    )
    unit: str | None = Field(default=None, max_length=32, description="UCUM unit")
    status: str = Field(default="F", max_length=16, description="OBX-11 / Observation.status")
    observation_id: str | None = Field(default=None, max_length=64)


class SpecimenIn(BaseModel):
    specimen_id: str = Field(min_length=1, max_length=128)
    patient_id: str = Field(min_length=1, max_length=128)
    sex: str | None = Field(default=None, description="male/female/M/F; other: unknown")
    age_y: float | None = Field(default=None, ge=0, le=150)
    collected_at: datetime
    results: list[LabResultIn] = Field(min_length=1, max_length=500)
    source_id: str | None = Field(default=None, max_length=128, description="e.g. MSH-10")

    @field_validator("collected_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class ScreenRequest(BaseModel):
    specimens: list[SpecimenIn] = Field(min_length=1, max_length=10_000)


class Reason(BaseModel):
    rule: str  # stable rule code, e.g. "critical_high", "delta", "edta_contamination"
    message: str


class Previous(BaseModel):
    value: float
    unit: str
    collected_at: datetime
    specimen_id: str


class ReferenceInterval(BaseModel):
    """The catalogue interval a result was judged against: its bounds (None: open),
    the partition it belongs to (sex, ages [from, to)) and the source it cites."""

    model_config = ConfigDict(frozen=True)

    low: float | None
    high: float | None
    sex: Literal["any", "male", "female"]
    age_from_y: float
    age_to_y: float
    partitioned: bool = Field(description="True: the interval is one of several by sex or age")
    partition: str = Field(description='e.g. "child 10 d-18 y", "female adult from 18 y"')
    source: str = Field(description="the catalogue's source key, e.g. harriet_lane")
    source_name: str = Field(description='short, e.g. "Harriet Lane"')
    source_citation: str


class ResultOutcome(BaseModel):
    code: str
    concept: Coding | None
    analyte: str | None
    value: float | str | None
    comparator: Comparator | None = None
    unit: str | None
    value_canonical: float | None = None
    unit_canonical: str | None = None
    status: ResultStatus
    interpretation: str = Field(description="HL7 v2 OBX-8 / v3 ObservationInterpretation")
    flags: list[str] = Field(default_factory=list)
    reasons: list[Reason] = Field(default_factory=list)
    reference_low: float | None = None
    reference_high: float | None = None
    reference_interval: ReferenceInterval | None = Field(
        default=None, description="the interval applied; None: none applied (see why)"
    )
    previous: Previous | None = None
    anomaly_contribution: float | None = None
    observation_id: str | None = None
    result_status: str = "F"
    assessed: bool = Field(
        default=True, description="False: no interpretation against a reference interval"
    )
    not_assessed_reason: NotAssessedCode | None = None
    not_assessed_message: str | None = None


class Anomaly(BaseModel):
    score: float = Field(description="-log10 of the panel's tail probability")
    probability: float = Field(description="1 - tail probability")
    threshold: float
    present: bool
    analytes_used: int
    model: ModelRef


class SpecimenOutcome(BaseModel):
    specimen_id: str
    patient_id: str
    collected_at: datetime
    verdict: Verdict
    reasons: list[Reason]
    results: list[ResultOutcome]
    anomaly: Anomaly | None = None
    anomaly_not_assessed: NotAssessed | None = Field(
        default=None, description="why the anomaly model did not score this specimen"
    )
    alert_ids: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class ScreenResponse(BaseModel):
    catalogue_version: str
    specimens: list[SpecimenOutcome]
    disclaimer: str | None = None
