"""The coarse groups a report's patient and study fall in, for agreement per subgroup:
site (the station, else the institution), sex and age band. Coarse on purpose: they
go into metric labels, where nothing finer than these groups may appear.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from typing import Any

UNKNOWN = "unknown"
OTHER = "other"  # sites past the metrics' cap
MAX_SITE_CHARS = 64


class AgeBand(enum.StrEnum):
    child = "0-17"
    young = "18-39"
    middle = "40-64"
    old = "65+"
    unknown = UNKNOWN


class Sex(enum.StrEnum):
    female = "F"
    male = "M"
    other = "O"
    unknown = UNKNOWN


class Dimension(enum.StrEnum):
    """What agreement can be broken down by."""

    site = "site"
    sex = "sex"
    age_band = "age_band"


_BAND_UPPER_Y = ((18, AgeBand.child), (40, AgeBand.young), (65, AgeBand.middle))


def age_band(age_y: float | None) -> AgeBand:
    if age_y is None or age_y < 0:
        return AgeBand.unknown
    for upper, band in _BAND_UPPER_Y:
        if age_y < upper:
            return band
    return AgeBand.old


def sex_group(value: str | None) -> Sex:
    """DICOM's and HL7's M / F / O (FHIR's male / female / other too)."""
    code = (value or "").strip().upper()[:1]
    return {"F": Sex.female, "M": Sex.male, "O": Sex.other}.get(code, Sex.unknown)


def site_group(station: str | None, institution: str | None = None) -> str:
    name = (station or "").strip() or (institution or "").strip()
    return name[:MAX_SITE_CHARS] if name else UNKNOWN


def dicom_age_y(age: str | None, birth: str | None, study: str | None) -> int | None:
    """Years from DICOM's Patient's Age ("045Y", "006M", "010W", "003D"), else from the
    birth and study dates (YYYYMMDD); None when neither is usable."""
    text = (age or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[text[3]]
        return int(int(text[:3]) / per_year)
    born, seen = _dicom_date(birth), _dicom_date(study)
    if born is None or seen is None or seen < born:
        return None
    return seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))


def _dicom_date(value: str | None) -> date | None:
    text = (value or "").strip()
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if len(text) == 8 else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Cohort:
    """The groups of one report (each `unknown` when the input did not say)."""

    site: str = UNKNOWN
    sex: Sex = Sex.unknown
    age_band: AgeBand = AgeBand.unknown

    @classmethod
    def of(
        cls,
        *,
        station: str | None = None,
        institution: str | None = None,
        sex: str | None = None,
        age_y: float | None = None,
    ) -> Cohort:
        return cls(site_group(station, institution), sex_group(sex), age_band(age_y))


def study_context(ds: Any) -> dict[str, Any]:
    """A DICOM header's station, institution, sex and age (years), for a report's
    source: what its Cohort is made from later. A garbled value reads as absent."""

    def text(keyword: str) -> str | None:
        try:
            value = ds.get(keyword)
        except Exception:  # a value pydicom cannot convert: treated as absent
            return None
        if value is None:
            return None
        return str(value).strip()[:MAX_SITE_CHARS] or None

    sex = sex_group(text("PatientSex"))
    return {
        "station_name": text("StationName"),
        "institution_name": text("InstitutionName"),
        "patient_sex": None if sex is Sex.unknown else sex.value,
        "patient_age_y": dicom_age_y(
            text("PatientAge"), text("PatientBirthDate"), text("StudyDate")
        ),
    }
