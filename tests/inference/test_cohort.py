"""The coarse groups of a report's study: age bands at their edges, DICOM ages in
each unit and from dates, sexes as the standards spell them, sites truncated."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file

from aidx.inference.agreement import cap_groups
from aidx.inference.cohort import (
    UNKNOWN,
    AgeBand,
    Cohort,
    Sex,
    age_band,
    dicom_age_y,
    sex_group,
    study_context,
)


@pytest.mark.parametrize(
    ("age_y", "band"),
    [(0, "0-17"), (17.9, "0-17"), (18, "18-39"), (39, "18-39"), (40, "40-64"),
     (64.99, "40-64"), (65, "65+"), (104, "65+"), (None, UNKNOWN), (-1, UNKNOWN)],
)  # fmt: skip
def test_age_bands_at_their_edges(age_y: float | None, band: str) -> None:
    assert age_band(age_y) == band


def test_dicom_ages_in_each_unit_and_from_dates() -> None:
    assert [dicom_age_y(a, None, None) for a in ("045Y", "018M", "104W", "400D")] == [45, 1, 1, 1]
    assert dicom_age_y(None, "19400305", "20040826") == 64
    assert dicom_age_y("", "19400905", "20040826") == 63  # the birthday not yet reached
    assert dicom_age_y("45", "garbage", "20040826") is None
    assert dicom_age_y(None, "20050101", "20040826") is None  # born after the study


def test_sexes_and_sites() -> None:
    assert [sex_group(v) for v in ("F", "male", "O", "", None, "U")] == [
        Sex.female, Sex.male, Sex.other, Sex.unknown, Sex.unknown, Sex.unknown,
    ]  # fmt: skip
    assert Cohort.of(station="  ", institution="General").site == "General"
    assert len(Cohort.of(station="X" * 300).site) == 64
    assert Cohort.of() == Cohort(UNKNOWN, Sex.unknown, AgeBand.unknown)


def test_a_real_header_gives_its_context() -> None:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"), stop_before_pixels=True)
    assert study_context(ds) == {
        "station_name": "THORAVISION",
        "institution_name": "Philips Medical Systems Hamburg",
        "patient_sex": "F",
        "patient_age_y": 64,
    }
    assert study_context(pydicom.Dataset())["patient_sex"] is None


def test_sites_past_the_cap_become_other_and_unknown_stays() -> None:
    totals = {"A": 5, "B": 9, "C": 1, UNKNOWN: 2}
    assert cap_groups(totals, 1) == {"B": "B", "A": "other", "C": "other", UNKNOWN: UNKNOWN}
