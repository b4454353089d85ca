"""The catalogue file: complete, cited, converting only what it lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from aidx.pipelines.labs.catalogue import (
    CatalogueError,
    RefState,
    Sex,
    default_catalogue_path,
    load_catalogue,
)

REQUIRED = {
    # BMP, electrolytes, renal
    "sodium", "potassium", "chloride", "bicarbonate", "urea_nitrogen", "creatinine",
    "glucose", "calcium", "magnesium", "phosphate",
    # liver
    "albumin", "protein_total", "alt", "ast", "alp", "bilirubin_total", "ldh",
    # CBC
    "hemoglobin", "hematocrit", "wbc", "platelets", "mcv", "mch", "rdw",
    # HbA1c, lipids, coagulation, troponin, blood gases
    "hba1c", "cholesterol_total", "cholesterol_hdl", "triglycerides",
    "pt", "inr", "aptt", "troponin_i_hs", "troponin_t_hs",
    "ph_arterial", "pco2_arterial", "po2_arterial",
}  # fmt: skip


def test_the_shipped_catalogue_covers_the_panels_and_cites_every_limit() -> None:
    catalogue = load_catalogue()
    assert set(catalogue.index) >= REQUIRED
    for a in catalogue.analytes:
        assert a.reference, f"{a.key} has no reference interval"
        for cited in [i.source for i in a.reference] + [
            x.source for x in (a.critical, a.delta) if x is not None
        ]:
            assert cited in catalogue.sources
    assert catalogue.by_code["2823-3"].key == "potassium"
    assert catalogue.by_code["14749-6"].key == "glucose"  # the molar code maps too


@pytest.mark.parametrize(
    ("key", "value", "unit", "expected"),
    [
        ("glucose", 90.0, "mg/dL", 4.995),  # mg/dL -> mmol/L
        ("glucose", 5.0, "mmol/L", 5.0),
        ("creatinine", 1.0, "mg/dL", 88.42),  # mg/dL -> umol/L
        ("creatinine", 1.0, "µmol/L", 1.0),
        ("calcium", 10.0, "mg/dL", 2.495),
        ("hba1c", 48.0, "mmol/mol", 6.542),  # IFCC -> NGSP: affine, not a factor
        ("hemoglobin", 135.0, "g/L", 13.5),
    ],
)
def test_unit_conversions(key: str, value: float, unit: str, expected: float) -> None:
    converted = load_catalogue().analyte(key).to_canonical(value, unit)
    assert converted == pytest.approx(expected, rel=1e-3)


def test_a_unit_that_is_not_listed_is_not_converted() -> None:
    glucose = load_catalogue().analyte("glucose")
    assert glucose.to_canonical(90.0, "g/L") is None
    assert glucose.to_canonical(90.0, "mg/dl ") is None  # UCUM is case-sensitive


def test_reference_tables_by_sex_and_age() -> None:
    catalogue = load_catalogue()
    t = catalogue.tables
    hb = catalogue.index["hemoglobin"]
    adult = t.age_band(np.array([40.0]))[0]
    assert t.ref_low[Sex.male, adult, hb] == 13.2
    assert t.ref_low[Sex.female, adult, hb] == 11.6
    # unknown sex where the sexes differ: no interval (was: the union of both, the
    # widest interval, which released what is abnormal for one sex)
    assert np.isnan(t.ref_low[Sex.unknown, adult, hb])
    assert t.ref_state[Sex.unknown, adult, hb] == RefState.sex_unknown
    # a child has its own band; an analyte without one has NaN, never a guess
    child = t.age_band(np.array([8.0]))[0]
    assert t.ref_low[Sex.female, child, hb] == 11.5
    bili = catalogue.index["bilirubin_total"]
    assert np.isnan(t.ref_low[Sex.female, child, bili])
    assert t.ref_state[Sex.female, child, bili] == RefState.no_reference_interval
    bun = catalogue.index["urea_nitrogen"]
    old = t.age_band(np.array([70.0]))[0]
    assert t.ref_high[Sex.female, old, bun] == 23


def test_rcv_delta_limits_follow_the_formula() -> None:
    sodium = load_catalogue().analyte("sodium")
    assert sodium.delta is not None
    # sqrt(2) * 1.96 * sqrt(0.5^2 + 0.7^2)
    assert sodium.delta.percent_limit == pytest.approx(2.385, abs=1e-3)


def test_an_invalid_catalogue_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(default_catalogue_path().read_text())
    data["analytes"][0]["critical"]["source"] = "nowhere"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogueError, match="unknown source"):
        load_catalogue(path)
    data = yaml.safe_load(default_catalogue_path().read_text())
    data["analytes"][1]["loinc"] = data["analytes"][0]["loinc"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogueError, match="listed for two analytes"):
        load_catalogue(path)
