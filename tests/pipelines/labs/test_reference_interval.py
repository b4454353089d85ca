"""Which reference interval applied: the same potassium for a 5-year-old and a
40-year-old is judged against the child's Harriet Lane band and the adult Mayo one,
and says so in its reason, its FHIR referenceRange (appliesTo/age/text) and the
alert evidence the lab console shows; HL7 OBX-7 stays the range; an unknown age,
where the interval depends on age, names no interval and says why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fhir.resources.R4B.observation import Observation

from aidx.adapters.labs_hl7 import build_oru
from aidx.pipelines.labs.catalogue import NO_INTERVAL, Sex, load_catalogue
from aidx.pipelines.labs.fhir import SNOMED, to_bundle
from aidx.pipelines.labs.reference import age_text, partition_text
from aidx.pipelines.labs.rules import reference_for
from aidx.pipelines.labs.screening import LabScreener
from aidx.pipelines.labs.store import Alert
from aidx.pipelines.labs.types import ResultOutcome, SpecimenOutcome

from .helpers import specimen, with_screener

K_HIGH = 5.05  # above the child's 3.5-5.0, within the adult's 3.5-5.1
K_ABOVE_BOTH = 5.4
CREATININE_UMOL = {"creatinine": "umol/L"}


def _specimens() -> list[Any]:
    return [
        specimen("CHILD-5", {"potassium": K_ABOVE_BOTH}, patient_id="C5", age_y=5),
        specimen("ADULT-40", {"potassium": K_ABOVE_BOTH}, patient_id="A40", age_y=40),
        specimen("CHILD-5B", {"potassium": K_HIGH}, patient_id="C5B", age_y=5),
        specimen("ADULT-40B", {"potassium": K_HIGH}, patient_id="A40B", age_y=40),
        specimen("ADULT-M", {"creatinine": 150}, units=CREATININE_UMOL, patient_id="AM", sex="M"),
        specimen("CHILD-CRIT", {"potassium": 7.0}, patient_id="CC", age_y=5),
        specimen("NO-AGE", {"potassium": K_ABOVE_BOTH}, patient_id="NA").model_copy(
            update={"age_y": None}
        ),
    ]


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Alert]]:
    async def work(screener: LabScreener) -> tuple[dict[str, Any], list[Alert]]:
        out = await screener.analyze(_specimens())
        return {o.specimen_id: o for o in out}, screener.store.alerts(state=None)

    return asyncio.run(with_screener(tmp_path_factory.mktemp("refint"), work))


def _k(outcome: SpecimenOutcome) -> ResultOutcome:
    return next(r for r in outcome.results if r.analyte == "potassium")


def test_the_same_potassium_names_the_child_and_the_adult_interval(
    screened: tuple[dict[str, Any], list[Alert]],
) -> None:
    out, _ = screened
    child, adult = _k(out["CHILD-5"]), _k(out["ADULT-40"])
    assert child.reference_interval is not None and adult.reference_interval is not None
    c, a = child.reference_interval, adult.reference_interval
    assert (c.low, c.high, c.sex, c.source, c.source_name) == (
        3.5, 5.0, "any", "harriet_lane", "Harriet Lane"
    )  # fmt: skip
    assert c.age_from_y == pytest.approx(10 / 365.25) and c.age_to_y == 18
    assert c.partition == "child 10 d-18 y" and c.partitioned
    assert c.source_citation.startswith("The Harriet Lane Handbook")
    assert (a.low, a.high, a.source, a.partition) == (3.5, 5.1, "mayo", "adult from 18 y")
    assert a.source_citation.startswith("Mayo Clinic Laboratories")
    assert (child.reference_low, child.reference_high) == (3.5, 5.0)  # unchanged fields
    high = [r.message for r in child.reasons if r.rule == "high"]
    assert high == [
        "Potassium 5.4 mmol/L is above the reference interval 3.5-5 (child 10 d-18 y, Harriet Lane)"
    ]
    assert [r.message for r in adult.reasons if r.rule == "high"] == [
        "Potassium 5.4 mmol/L is above the reference interval 3.5-5.1 "
        "(adult from 18 y, Mayo Clinic)"
    ]
    # a value between the two upper limits: high for the child only
    assert _k(out["CHILD-5B"]).interpretation == "H"
    assert _k(out["ADULT-40B"]).interpretation == "N"
    assert _k(out["ADULT-40B"]).reference_interval == a


def test_an_unknown_age_names_no_interval_and_says_why(
    screened: tuple[dict[str, Any], list[Alert]],
) -> None:
    out, _ = screened
    k = _k(out["NO-AGE"])
    assert k.reference_interval is None and k.reference_low is None
    assert not k.assessed and k.not_assessed_reason == "age_unknown"
    assert k.not_assessed_message is not None
    assert "depends on age and the patient's age is unknown" in k.not_assessed_message
    assert all(r.rule != "high" for r in k.reasons)


def test_the_alert_evidence_carries_the_interval_for_the_console(
    screened: tuple[dict[str, Any], list[Alert]],
) -> None:
    _, alerts = screened
    (critical,) = [a for a in alerts if a.specimen_id == "CHILD-CRIT"]
    (value,) = critical.evidence["values"]
    interval = value["reference_interval"]
    assert (interval["partition"], interval["source_name"]) == ("child 10 d-18 y", "Harriet Lane")
    assert (interval["low"], interval["high"], interval["source"]) == (3.5, 5.0, "harriet_lane")
    (review,) = [a for a in alerts if a.specimen_id == "NO-AGE" and a.rule == "review"]
    assert review.evidence["values"][0]["reference_interval"] is None


def test_fhir_reference_range_names_partition_and_source(
    screened: tuple[dict[str, Any], list[Alert]],
) -> None:
    out, _ = screened
    bundle = to_bundle([out["CHILD-5"], out["ADULT-40"], out["ADULT-M"]])
    ranges = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Observation":
            observation = Observation.model_validate(resource)  # valid R4
            ranges[observation.subject.reference] = observation.referenceRange[0]
    child, adult = ranges["Patient/C5"], ranges["Patient/A40"]
    assert child.text == "child 10 d-18 y, Harriet Lane"
    assert (float(child.age.low.value), child.age.low.code) == (10, "d")
    assert (float(child.age.high.value), child.age.high.code) == (18, "a")
    assert child.appliesTo is None  # both sexes
    assert (float(child.low.value), float(child.high.value)) == (3.5, 5.0)
    assert adult.text == "adult from 18 y, Mayo Clinic"
    assert float(adult.age.low.value) == 18 and adult.age.high is None
    male = ranges["Patient/AM"]
    assert male.text == "male adult from 18 y, Mayo Clinic"
    (coding,) = male.appliesTo[0].coding
    assert (coding.system, coding.code) == (SNOMED, "248153007")


def test_hl7_obx7_stays_the_range(screened: tuple[dict[str, Any], list[Alert]]) -> None:
    out, _ = screened
    oru = build_oru([out["CHILD-5"]], control_id="R1").decode()
    (obx,) = [line for line in oru.split("\r") if line.startswith("OBX|")]
    assert obx.split("|")[7] == "3.5-5"
    assert "Harriet Lane" in oru  # in the reason's NTE, not in OBX-7


def test_the_tables_index_the_interval_of_each_cell() -> None:
    catalogue = load_catalogue()
    t = catalogue.tables
    k = catalogue.index["potassium"]
    reference = catalogue.analytes[k].reference
    sex = np.array([Sex.female, Sex.male, Sex.unknown, Sex.female, Sex.unknown])
    age = np.array([5.0, 40.0, 5.0, np.nan, 40.0])
    _, _, _, index = reference_for(t, sex, age)
    assert [reference[i].source if i != NO_INTERVAL else None for i in index[:, k]] == [
        "harriet_lane", "mayo", "harriet_lane", None, "mayo"
    ]  # fmt: skip
    creatinine = catalogue.index["creatinine"]
    assert index[4, creatinine] == NO_INTERVAL  # unknown sex where the sexes differ
    assert (t.ref_index[t.ref_state != 0] == NO_INTERVAL).all()
    assert (t.ref_index[t.ref_state == 0] != NO_INTERVAL).all()


@pytest.mark.parametrize(
    ("age_y", "text"),
    [(18.0, "18 y"), (1 / 12, "1 mo"), (10 / 365.25, "10 d"), (0.25 / 365.25, "6 h"),
     (1.5, "18 mo")],
)  # fmt: skip
def test_ages_read_as_the_catalogue_writes_them(age_y: float, text: str) -> None:
    assert age_text(age_y) == text


def test_partitions_read_in_words() -> None:
    catalogue = load_catalogue()
    words = {
        key: [partition_text(i) for i in catalogue.analyte(key).reference]
        for key in ("potassium", "creatinine", "hemolysis_index")
    }
    assert words["potassium"] == ["newborn under 10 d", "child 10 d-18 y", "adult from 18 y"]
    assert words["creatinine"][-2:] == ["male adult from 18 y", "female adult from 18 y"]
    assert words["hemolysis_index"] == ["all ages"]


def test_source_names_must_name_a_source(tmp_path: Path) -> None:
    import yaml

    from aidx.pipelines.labs.catalogue import CatalogueError, default_catalogue_path

    data = yaml.safe_load(default_catalogue_path().read_text())
    data["source_names"]["nowhere"] = "Nowhere"
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogueError, match="unknown source"):
        load_catalogue(path)
