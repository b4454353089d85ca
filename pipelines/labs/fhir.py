"""FHIR R4 for lab screening, with `fhir.resources` R4B models.

In: a Bundle of Observations (with their Patient and, when present, Specimen), each
validated as R4; Observations are grouped into specimens by Observation.specimen,
else by subject and effective time.
Out: a Bundle with one Observation per screened result (interpretation from the v3
ObservationInterpretation code system, reference range, reasons as notes) and one
DetectedIssue per alert, implicating its Observations. A reference range that is one
of several by sex or age says which: `appliesTo` (SNOMED CT sex), `age`, and `text`
naming the partition and the source.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from aidx.inference.errors import Unprocessable
from aidx.inference.reports import Coding
from aidx.pipelines.labs.reference import ALL_AGES_Y, age_quantity, reference_label
from aidx.pipelines.labs.types import (
    Comparator,
    LabResultIn,
    Reason,
    ReferenceInterval,
    ResultOutcome,
    SpecimenIn,
    SpecimenOutcome,
)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DETECTED_ISSUE_CATEGORY = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SNOMED = "http://snomed.info/sct"
# the referencerange-appliesto value set's sex concepts
_SEX_CONCEPT = {"female": ("248152002", "Female"), "male": ("248153007", "Male")}
_FHIR_NAMESPACE = uuid.UUID("7d0c5c9e-3f4b-4d1a-8f7e-2b6a9c1d4e53")
_INTERPRETATION_TEXT = {
    "N": "Normal",
    "H": "High",
    "L": "Low",
    "HH": "Critical high",
    "LL": "Critical low",
    "A": "Abnormal",
    "AA": "Critical abnormal",
}
_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "A": "amended"}


class FhirError(Unprocessable):
    code = "invalid_fhir"


def _age_y(birth: date | None, at: datetime) -> float | None:
    if birth is None:
        return None
    days = (at.date() - birth).days
    return days / 365.25 if days >= 0 else None


def _ref_id(reference: Any) -> str | None:
    text = getattr(reference, "reference", None)
    return str(text).rsplit("/", 1)[-1] if text else None


def parse_bundle(data: dict[str, Any]) -> list[SpecimenIn]:
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise FhirError(f"not a valid FHIR R4 Bundle: {where}") from None
    patients: dict[str, Any] = {}
    specimens: dict[str, Any] = {}
    observations: list[Any] = []
    for entry in bundle.entry or []:
        resource: Any = entry.resource
        kind = type(resource).__name__
        if kind == "Patient":
            patients[str(resource.id)] = resource
        elif kind == "Specimen":
            specimens[str(resource.id)] = resource
        elif kind == "Observation":
            observations.append(resource)
    if not observations:
        raise FhirError("the Bundle holds no Observation")
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for obs in observations:
        patient_id = _ref_id(obs.subject)
        if patient_id is None:
            raise FhirError(f"Observation {obs.id or '?'} has no subject")
        specimen_id = _ref_id(obs.specimen) or f"{patient_id}@{obs.effectiveDateTime}"
        groups[(patient_id, specimen_id)].append(obs)
    return [
        _specimen(patient_id, specimen_id, obs_list, patients, specimens)
        for (patient_id, specimen_id), obs_list in groups.items()
    ]


def _collected(obs_list: list[Any], specimen: Any) -> datetime:
    when = None
    if specimen is not None and specimen.collection is not None:
        when = specimen.collection.collectedDateTime
    when = when or obs_list[0].effectiveDateTime or obs_list[0].issued
    if when is None:
        raise FhirError("an Observation has no effectiveDateTime and its Specimen no collection")
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if not isinstance(when, datetime):  # a date only
        when = datetime(when.year, when.month, when.day)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _specimen(
    patient_id: str,
    specimen_id: str,
    obs_list: list[Any],
    patients: dict[str, Any],
    specimens: dict[str, Any],
) -> SpecimenIn:
    patient = patients.get(patient_id)
    collected = _collected(obs_list, specimens.get(specimen_id))
    results = []
    for obs in obs_list:
        coding = next(
            (c for c in (obs.code.coding or []) if c.system == LOINC),
            (obs.code.coding or [None])[0],
        )
        if coding is None or not coding.code:
            raise FhirError(f"Observation {obs.id or '?'} has no code")
        value: float | str | None = None
        unit = None
        comparator = None
        if obs.valueQuantity is not None:
            q = obs.valueQuantity
            value = float(q.value) if q.value is not None else None
            unit = q.code or q.unit
            comparator = Comparator(str(q.comparator)) if q.comparator else None
        elif obs.valueString is not None:
            value = obs.valueString
        status = {v: k for k, v in _STATUS.items()}.get(str(obs.status), str(obs.status))
        results.append(
            LabResultIn(
                code=str(coding.code),
                value=value,
                comparator=comparator,
                unit=unit,
                status=status,
                observation_id=obs.id,
            )
        )
    birth = patient.birthDate if patient is not None else None
    return SpecimenIn(
        specimen_id=specimen_id,
        patient_id=patient_id,
        sex=str(patient.gender) if patient is not None and patient.gender else None,
        age_y=_age_y(birth, collected) if isinstance(birth, date) else None,
        collected_at=collected,
        results=results,
    )


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_FHIR_NAMESPACE, "|".join(parts)))


def _quantity(value: float, unit: str | None) -> dict[str, Any]:
    return {"value": value, "system": UCUM, "code": unit}


def _age(interval: ReferenceInterval) -> dict[str, Any]:
    """The ages [from, to) as a Range in the catalogue's own units (10 d, 18 a); an
    end at birth or at the catalogue's last age is left open."""
    age: dict[str, Any] = {}
    for end, years in (("low", interval.age_from_y), ("high", interval.age_to_y)):
        if years <= ALL_AGES_Y[0] or years >= ALL_AGES_Y[1]:
            continue
        value, unit = age_quantity(years)
        age[end] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return age


def _partition(interval: ReferenceInterval) -> dict[str, Any]:
    """Whom the range applies to, where it is one of several by sex or age."""
    if not interval.partitioned:
        return {}
    part: dict[str, Any] = {"text": reference_label(interval)}
    if age := _age(interval):
        part["age"] = age
    if interval.sex in _SEX_CONCEPT:
        code, display = _SEX_CONCEPT[interval.sex]
        part["appliesTo"] = [{"coding": [{"system": SNOMED, "code": code, "display": display}]}]
    return part


def _reference_range(r: ResultOutcome) -> dict[str, Any]:
    rng: dict[str, Any] = {}
    if r.reference_low is not None:
        rng["low"] = _quantity(r.reference_low, r.unit_canonical)
    if r.reference_high is not None:
        rng["high"] = _quantity(r.reference_high, r.unit_canonical)
    if r.reference_interval is not None:
        rng.update(_partition(r.reference_interval))
    return rng


def _interpretation(code: str) -> dict[str, Any]:
    coding = {"system": INTERPRETATION, "code": code, "display": _INTERPRETATION_TEXT[code]}
    return {"coding": [coding]}


def _observation(
    o: SpecimenOutcome, r: ResultOutcome, obs_id: str, concept: Coding
) -> dict[str, Any]:
    """One screened result: value, interpretation, reference range, reasons as notes."""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": _STATUS.get(r.result_status, "final"),
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": concept.code, "display": concept.meaning}]},
        "subject": {"reference": f"Patient/{o.patient_id}"},
        "effectiveDateTime": o.collected_at.isoformat(),
    }
    if r.value_canonical is not None:
        obs["valueQuantity"] = {
            "value": r.value_canonical,
            "unit": r.unit_canonical,
            "system": UCUM,
            "code": r.unit_canonical,
        }
        if r.comparator is not None:
            obs["valueQuantity"]["comparator"] = r.comparator.value
    else:
        obs["valueString"] = str(r.value)
    if r.interpretation:
        obs["interpretation"] = [_interpretation(r.interpretation)]
    if r.reference_low is not None or r.reference_high is not None:
        obs["referenceRange"] = [_reference_range(r)]
    if r.reasons:
        obs["note"] = [{"text": f"{x.rule}: {x.message}"} for x in r.reasons]
    return obs


def _detected_issue(
    o: SpecimenOutcome, reason: Reason, issue_id: str, by_analyte: dict[str, str]
) -> dict[str, Any]:
    """One alert, implicating the Observations of the results its rule flagged."""
    implicated = [
        {"reference": f"urn:uuid:{by_analyte[r.analyte]}"}
        for r in o.results
        if r.analyte in by_analyte and reason.rule in r.flags
    ]
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": issue_id,
        "status": "preliminary",
        "code": {"text": reason.rule},
        "severity": "high" if o.verdict.value == "critical" else "moderate",
        "patient": {"reference": f"Patient/{o.patient_id}"},
        "identifiedDateTime": datetime.now(UTC).isoformat(),
        "detail": reason.message,
    }
    if implicated:
        issue["implicated"] = implicated
    return issue


def to_bundle(outcomes: list[SpecimenOutcome]) -> dict[str, Any]:
    """A collection Bundle of Observations and DetectedIssues, validated as R4."""
    entries: list[dict[str, Any]] = []
    for o in outcomes:
        by_analyte: dict[str, str] = {}
        for i, r in enumerate(o.results):
            if r.concept is None:
                continue
            obs_id = _uuid(o.specimen_id, r.code, str(i))
            if r.analyte:
                by_analyte[r.analyte] = obs_id
            obs = _observation(o, r, obs_id, r.concept)
            entries.append({"fullUrl": f"urn:uuid:{obs_id}", "resource": obs})
        for reason in o.reasons:
            issue_id = _uuid(o.specimen_id, reason.rule, reason.message)
            issue = _detected_issue(o, reason, issue_id, by_analyte)
            entries.append({"fullUrl": f"urn:uuid:{issue_id}", "resource": issue})
    data = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    Bundle.model_validate(data)  # what leaves is valid R4
    return data
