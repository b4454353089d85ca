"""Labs that know whom they are looking at: reference intervals by age band from
birth, no silent release without an interval (unknown sex, unknown age, no band),
the adult-trained anomaly model kept off children, censored values (<3) kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aidx.adapters.labs_hl7 import build_oru
from aidx.pipelines.labs.fhir import to_bundle
from aidx.pipelines.labs.screening import LabScreener
from aidx.pipelines.labs.store import Alert
from aidx.pipelines.labs.types import (
    Comparator,
    LabResultIn,
    ResultOutcome,
    SpecimenIn,
    SpecimenOutcome,
    Verdict,
)

from .helpers import T0, specimen, with_screener

DAY_Y = 1 / 365.25
CHILD_10 = {
    "sodium": 140,
    "potassium": 4.2,
    "chloride": 103,
    "bicarbonate": 24,
    "glucose": 90,
    "creatinine": 40,
    "alp": 250,
    "hemoglobin": 13.0,
    "mcv": 85,
    "wbc": 7.0,
}


def _specimens() -> list[SpecimenIn]:
    umol = {"creatinine": "umol/L"}
    no_sex = specimen("ADULT-NOSEX", {"creatinine": 110}, units=umol, patient_id="P5")
    no_age = specimen("ADULT-NOAGE", {"sodium": 140, "potassium": 7.5}, patient_id="P6")
    censored = specimen("ADULT-CENS", {"sodium": 140}, patient_id="P7", sex="M")
    censored.results += [
        LabResultIn(code="89579-7", value=3, comparator=Comparator.lt, unit="ng/L"),
        LabResultIn(code="1742-6", value=10, comparator=Comparator.lt, unit="U/L"),
    ]
    return [
        specimen("NEWBORN", {"hemoglobin": 18.0, "potassium": 5.5}, age_y=2 * DAY_Y),
        specimen("CHILD-3", {"hemoglobin": 11.0, "wbc": 9.0}, patient_id="P2", age_y=3),
        specimen("CHILD-10", CHILD_10, units=umol, patient_id="P3", age_y=10),
        specimen(
            "TEEN-M",
            {"alp": 300, "creatinine": 80},
            units=umol,
            patient_id="P4a",
            sex="M",
            age_y=16,
        ),  # fmt: skip
        specimen("TEEN-F", {"alp": 300}, patient_id="P4b", sex="F", age_y=16),
        no_sex.model_copy(update={"sex": None}),
        no_age.model_copy(update={"age_y": None}),
        censored,
    ]


def _screen(tmp_path: Path) -> tuple[dict[str, SpecimenOutcome], list[Alert]]:
    async def work(screener: LabScreener) -> tuple[dict[str, SpecimenOutcome], list[Alert]]:
        out = await screener.analyze(_specimens())
        return {o.specimen_id: o for o in out}, screener.store.alerts(state=None)

    return asyncio.run(with_screener(tmp_path, work))


def _result(outcome: SpecimenOutcome, analyte: str) -> ResultOutcome:
    return next(r for r in outcome.results if r.analyte == analyte)


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list]:  # type: ignore[type-arg]
    return _screen(tmp_path_factory.mktemp("children"))


def test_children_get_their_age_band_and_adults_model_is_kept_off(
    screened: tuple[dict, list],  # type: ignore[type-arg]
) -> None:
    out, _ = screened
    newborn = out["NEWBORN"]
    hb = _result(newborn, "hemoglobin")
    assert (hb.reference_low, hb.reference_high, hb.interpretation) == (14.5, 22.5, "N")
    k = _result(newborn, "potassium")
    assert (k.reference_low, k.reference_high, k.interpretation) == (4.0, 6.0, "N")
    assert newborn.verdict is Verdict.release

    child = out["CHILD-3"]  # a 3-year-old gets its band (2-6 y), and the right flag
    hb = _result(child, "hemoglobin")
    assert (hb.reference_low, hb.reference_high, hb.interpretation) == (11.5, 13.5, "L")
    wbc = _result(child, "wbc")
    assert (wbc.reference_low, wbc.reference_high, wbc.interpretation) == (5.5, 15.5, "N")

    ten = out["CHILD-10"]  # a normal 10-year-old: released, the adult model kept off
    assert ten.verdict is Verdict.release, ten.reasons
    assert all(r.interpretation == "N" and r.assessed for r in ten.results)
    assert _result(ten, "creatinine").reference_high == 54
    assert _result(ten, "alp").reference_low == 141
    assert ten.anomaly is None and ten.anomaly_not_assessed is not None
    assert ten.anomaly_not_assessed.reason == "model_not_applicable"
    assert any("anomaly model not applicable: trained on adults" in w for w in ten.warnings)
    assert all("multivariate_anomaly" not in r.flags for r in ten.results)

    # adolescence: ALP by sex
    assert _result(out["TEEN-M"], "alp").interpretation == "N"
    assert _result(out["TEEN-M"], "creatinine").reference_low == 55
    assert _result(out["TEEN-F"], "alp").interpretation == "H"


def test_unknown_sex_or_age_is_reviewed_and_raises_a_review_alert(
    screened: tuple[dict, list],  # type: ignore[type-arg]
) -> None:
    out, alerts = screened
    no_sex = out["ADULT-NOSEX"]  # was "N" against the widest interval of both sexes
    creatinine = _result(no_sex, "creatinine")
    assert no_sex.verdict is Verdict.review
    assert not creatinine.assessed and creatinine.not_assessed_reason == "sex_unknown"
    assert creatinine.interpretation == "" and creatinine.reference_low is None
    assert "sex_unknown" in {r.rule for r in no_sex.reasons}

    no_age = out["ADULT-NOAGE"]  # no age: not assessed, but a critical value still calls
    assert _result(no_age, "sodium").not_assessed_reason == "age_unknown"
    assert _result(no_age, "potassium").interpretation == "HH"
    assert no_age.verdict is Verdict.critical

    review = {a.specimen_id: a for a in alerts if a.rule == "review"}
    assert {"ADULT-NOSEX", "ADULT-NOAGE"} <= set(review)
    assert "CHILD-10" not in review and "NEWBORN" not in review
    assert review["ADULT-NOSEX"].severity == "warning"
    assert review["ADULT-NOSEX"].evidence["values"][0]["not_assessed_reason"] == "sex_unknown"


def test_comparators_are_judged_only_when_decidable_and_survive_fhir_and_hl7(
    screened: tuple[dict, list],  # type: ignore[type-arg]
) -> None:
    out, _ = screened
    no_sex = out["ADULT-NOSEX"]
    cens = out["ADULT-CENS"]
    troponin = _result(cens, "troponin_i_hs")  # <3 against 0-34: decidably normal
    assert troponin.comparator is Comparator.lt and troponin.interpretation == "N"
    alt = _result(cens, "alt")  # <10 against a lower limit of 7: undecidable
    assert not alt.assessed and alt.not_assessed_reason == "censored_value"
    assert cens.verdict is Verdict.review

    bundle = to_bundle([cens])
    quantities = [
        e["resource"]["valueQuantity"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and e["resource"]["code"]["coding"][0]["code"] == "89579-7"
    ]
    assert quantities == [
        {"value": 3.0, "unit": "ng/L", "system": "http://unitsofmeasure.org",
         "code": "ng/L", "comparator": "<"}
    ]  # fmt: skip
    oru = build_oru([cens, no_sex], control_id="C1").decode()
    assert "|SN|89579-7^" in oru and "|<^3|" in oru
    assert "NTE|2|L|not_assessed" not in oru  # reasons are by code, e.g. sex_unknown
    assert any(line.startswith("NTE|") and "sex_unknown" in line for line in oru.split("\r"))


def test_results_at_birth_without_a_band_are_not_assessed(tmp_path: Path) -> None:
    """Bilirubin has no paediatric band in the catalogue: a child's goes to review."""
    s = specimen("BILI", {"bilirubin_total": 0.5}, age_y=4)

    async def work(screener: LabScreener) -> list[SpecimenOutcome]:
        return await screener.analyze([s])

    (out,) = asyncio.run(with_screener(tmp_path, work))
    bili = out.results[0]
    assert bili.not_assessed_reason == "no_reference_interval"
    assert bili.not_assessed_message is not None and "4 years" in bili.not_assessed_message
    assert out.verdict is Verdict.review
    assert out.collected_at == T0
