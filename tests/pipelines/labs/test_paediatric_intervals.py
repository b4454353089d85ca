"""Paediatric reference intervals (issue 13, item 4): the 20 most-ordered analytes have
bands from birth to 18 y for each sex with no gap and no overlap, each citing a
paediatric source listed in the catalogue; children of several ages get their band
(never "no interval") and the right flag; the loader refuses a gap between bands."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import yaml

from aidx.pipelines.labs.catalogue import (
    Catalogue,
    CatalogueError,
    RefState,
    Sex,
    default_catalogue_path,
    load_catalogue,
)
from aidx.pipelines.labs.screening import LabScreener
from aidx.pipelines.labs.types import LabResultIn, SpecimenIn, SpecimenOutcome

from .helpers import T0, with_screener

# the basic metabolic panel with magnesium, the liver panel's enzymes and albumin, the
# complete blood count: the tests a children's hospital orders most
MOST_ORDERED = (
    "sodium", "potassium", "chloride", "bicarbonate", "urea_nitrogen", "creatinine",
    "glucose", "magnesium",
    "albumin", "alt", "ast", "alp",
    "hemoglobin", "hematocrit", "wbc", "platelets", "rbc", "mcv", "mch", "mchc",
)  # fmt: skip
PAEDIATRIC_SOURCES = {"caliper2012", "harriet_lane", "nathan_oski", "dallman", "pedsap"}
ADULT_Y = 18.0
HOUR_Y = 1 / (24 * 365.25)
DAY_Y = 1 / 365.25
SAMPLE_AGES_Y = (2 * HOUR_Y, 12 * HOUR_Y, 2 * DAY_Y, 10 * DAY_Y, 3 * 7 * DAY_Y, 0.5, 2, 7, 12, 17)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def test_the_list_is_twenty_catalogued_analytes(catalogue: Catalogue) -> None:
    assert len(set(MOST_ORDERED)) == 20
    assert set(MOST_ORDERED) <= set(catalogue.index)


@pytest.mark.parametrize("sex", ["female", "male"])
@pytest.mark.parametrize("key", MOST_ORDERED)
def test_bands_run_from_birth_to_18_without_gap_or_overlap(
    catalogue: Catalogue, key: str, sex: str
) -> None:
    analyte = catalogue.analyte(key)
    bands = sorted(
        (i for i in analyte.reference if i.sex in ("any", sex) and i.age_y[0] < ADULT_Y),
        key=lambda i: i.age_y,
    )
    assert bands and bands[0].age_y[0] == 0.0, f"{key} ({sex}) has no band from birth"
    for before, after in zip(bands, bands[1:], strict=False):
        assert after.age_y[0] == pytest.approx(before.age_y[1], abs=1e-9), (
            f"{key} ({sex}): gap or overlap between {before.age_y} and {after.age_y}"
        )
    assert bands[-1].age_y[1] == pytest.approx(ADULT_Y), f"{key} ({sex}) stops before 18 y"
    for band in bands:
        assert band.source in catalogue.sources
        assert band.source in PAEDIATRIC_SOURCES, f"{key}: {band.source} is not paediatric"


@pytest.mark.parametrize("age_y", SAMPLE_AGES_Y)
def test_children_of_any_age_and_either_sex_get_an_interval(
    catalogue: Catalogue, age_y: float
) -> None:
    t = catalogue.tables
    band = t.age_band(np.array([age_y]))[0]
    columns = [catalogue.index[k] for k in MOST_ORDERED]
    for sex in (Sex.female, Sex.male):
        states = t.ref_state[sex, band, columns]
        missing = [k for k, s in zip(MOST_ORDERED, states, strict=True) if s != RefState.assessed]
        assert not missing, f"no interval at {age_y:.4f} y ({sex.name}) for {missing}"
        assert not np.isnan(t.ref_low[sex, band, columns]).any()


def _child(specimen_id: str, sex: str, age_y: float, values: dict[str, float]) -> SpecimenIn:
    """Values in each analyte's canonical unit, sent under its first LOINC code."""
    catalogue = load_catalogue()
    return SpecimenIn(
        specimen_id=specimen_id,
        patient_id=f"P-{specimen_id}",
        sex=sex,
        age_y=age_y,
        collected_at=T0,
        results=[
            LabResultIn(code=catalogue.analyte(k).loinc[0], value=v, unit=catalogue.analyte(k).unit)
            for k, v in values.items()
        ],
        source_id=f"MSG-{specimen_id}",
    )


# specimen -> (sex, age, {analyte: (value, expected low, expected high, flag)}): values
# clearly outside the child's band but inside the critical limits, and clearly normal ones
CASES: dict[str, tuple[str, float, dict[str, tuple[float, float, float, str]]]] = {
    "NEWBORN-12H": ("M", 12 * HOUR_Y, {
        "wbc": (8.0, 13.0, 38.0, "L"),  # normal for an adult, low 12 hours after birth
        "hemoglobin": (17.0, 14.5, 22.5, "N"),
        "ast": (200, 30, 150, "H"),
        "platelets": (250, 84, 478, "N"),
    }),
    "INFANT-6MO": ("F", 0.5, {
        "glucose": (2.9, 3.3, 5.6, "L"),
        "alt": (120, 12, 45, "H"),
        "platelets": (60, 150, 450, "L"),
        "albumin": (40, 19, 49, "N"),
    }),
    "CHILD-4Y": ("M", 4.0, {
        "urea_nitrogen": (30, 2, 20, "H"),
        "magnesium": (0.55, 0.75, 1.25, "L"),
        "albumin": (28, 35, 56, "L"),
        "ast": (30, 15, 50, "N"),
    }),
    "TEEN-17F": ("F", 17.0, {
        "ast": (40, 5, 30, "H"),  # normal for a boy of 17 (15-45)
        "alt": (30, 5, 55, "N"),
        "magnesium": (0.9, 0.75, 1.25, "N"),
    }),
}  # fmt: skip


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SpecimenOutcome]:
    specimens = [
        _child(sid, sex, age_y, {k: v[0] for k, v in values.items()})
        for sid, (sex, age_y, values) in CASES.items()
    ]

    async def work(screener: LabScreener) -> list[SpecimenOutcome]:
        return await screener.analyze(specimens)

    out = asyncio.run(with_screener(tmp_path_factory.mktemp("paediatric"), work))
    return {o.specimen_id: o for o in out}


@pytest.mark.parametrize("specimen_id", list(CASES))
def test_children_are_flagged_against_their_own_band(
    screened: dict[str, SpecimenOutcome], specimen_id: str
) -> None:
    outcome = screened[specimen_id]
    results = {r.analyte: r for r in outcome.results}
    for key, (value, low, high, flag) in CASES[specimen_id][2].items():
        r = results[key]
        assert r.assessed and r.not_assessed_reason is None, (key, r.not_assessed_reason)
        assert (r.reference_low, r.reference_high) == (low, high), key
        assert r.interpretation == flag, (key, value, r.interpretation)
    assert all(r.rule != "no_reference_interval" for r in outcome.reasons)


def test_the_loader_refuses_a_gap_between_age_bands(tmp_path: Path) -> None:
    data = yaml.safe_load(default_catalogue_path().read_text())
    glucose = next(a for a in data["analytes"] if a["key"] == "glucose")
    child = next(i for i in glucose["reference"] if i["age_y"] == ["1mo", "18y"])
    child["age_y"] = ["1y", "18y"]  # the gap this catalogue once had: infants got nothing
    path = tmp_path / "gap.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogueError, match="glucose: no female interval from 0.08333 to 1 y"):
        load_catalogue(path)
