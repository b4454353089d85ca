"""Each rule against cases with known answers, through the real screener: the shipped
catalogue, a SQLite store and the labs_anomaly model behind the batcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aidx.pipelines.labs.screening import LabScreener
from aidx.pipelines.labs.types import SpecimenOutcome, Verdict

from .helpers import NORMAL, specimen, with_screener


def screen_one(tmp_path: Path, *specimens_in_order: object) -> list[SpecimenOutcome]:
    """Screen each argument (a SpecimenIn or a list of them) as one message, in order."""

    async def work(screener: LabScreener) -> list[SpecimenOutcome]:
        out = []
        for message in specimens_in_order:
            batch = message if isinstance(message, list) else [message]
            out.extend(await screener.analyze(batch))
        return out

    return asyncio.run(with_screener(tmp_path, work))


def flags(outcome: SpecimenOutcome, analyte: str) -> list[str]:
    return next(r.flags for r in outcome.results if r.analyte == analyte)


def rules(outcome: SpecimenOutcome) -> set[str]:
    return {r.rule for r in outcome.reasons}


def test_a_normal_panel_is_released(tmp_path: Path) -> None:
    (out,) = screen_one(tmp_path, specimen("S1", NORMAL))
    assert out.verdict is Verdict.release
    assert all(r.interpretation == "N" for r in out.results)
    assert out.anomaly is not None and not out.anomaly.present
    assert out.anomaly.analytes_used == 20
    assert out.alert_ids == []


def test_critical_high_and_low_and_reference_flags(tmp_path: Path) -> None:
    values = {**NORMAL, "potassium": 6.8, "sodium": 118, "glucose": 130}
    (out,) = screen_one(tmp_path, specimen("S1", values))
    assert out.verdict is Verdict.critical
    k = next(r for r in out.results if r.analyte == "potassium")
    assert k.interpretation == "HH" and "critical_high" in k.flags
    assert flags(out, "sodium")[:1] == ["critical_low"]
    glucose = next(r for r in out.results if r.analyte == "glucose")
    assert glucose.interpretation == "H" and glucose.flags == ["high"]
    assert {"critical_high", "critical_low"} <= rules(out)


def test_high_and_low_alone_are_released(tmp_path: Path) -> None:
    (out,) = screen_one(tmp_path, specimen("S1", {**NORMAL, "glucose": 130}))
    assert out.verdict is Verdict.release
    assert flags(out, "glucose") == ["high"]


def test_a_unit_conversion_gives_the_same_answer(tmp_path: Path) -> None:
    mg = specimen("S1", {"glucose": 540.0, "creatinine": 2.0})
    si = specimen(
        "S2",
        {"glucose": 29.97, "creatinine": 176.84},
        patient_id="P2",
        units={"glucose": "mmol/L", "creatinine": "umol/L"},
    )
    a, b = screen_one(tmp_path, mg, si)
    for out in (a, b):
        assert flags(out, "glucose") == ["critical_high", "high"]
        assert flags(out, "creatinine") == ["high"]
    assert a.results[0].value_canonical is not None
    assert a.results[0].value_canonical == b.results[0].value_canonical


def test_what_cannot_be_screened_is_reported_not_guessed(tmp_path: Path) -> None:
    from aidx.pipelines.labs.types import LabResultIn

    s = specimen("S1", {"sodium": 140, "potassium": "<2", "glucose": 90})
    s.results += [
        LabResultIn(code="99999-9", value=1.0, unit="mmol/L"),
        LabResultIn(code="2160-0", value=1.0, unit="mmol/dL"),
        LabResultIn(code="777-3", value=-20, unit="10*3/uL"),
    ]
    (out,) = screen_one(tmp_path, s)
    status = {r.code: r.status.value for r in out.results}
    assert status == {
        "2951-2": "screened",
        "2823-3": "not_numeric",
        "2345-7": "screened",
        "99999-9": "unknown_code",
        "2160-0": "unit_not_convertible",
        "777-3": "impossible_value",
    }
    assert out.verdict is Verdict.review
    assert next(r for r in out.results if r.code == "2160-0").value_canonical is None


def test_a_delta_across_two_messages(tmp_path: Path) -> None:
    first = specimen("S1", {"potassium": 3.8, "hemoglobin": 13.5})
    second = specimen("S2", {"potassium": 5.0, "hemoglobin": 10.9}, hours=24)
    a, b = screen_one(tmp_path, first, second)
    assert a.verdict is Verdict.release
    assert "delta" in flags(b, "potassium")  # +1.2 > 1.0 mmol/L within 72 h
    assert "delta" in flags(b, "hemoglobin")  # -2.6 > 2.0 g/dL
    hb = next(r for r in b.results if r.analyte == "hemoglobin")
    assert hb.previous is not None and hb.previous.value == 13.5
    assert hb.previous.specimen_id == "S1"
    assert b.verdict is Verdict.review


def test_a_delta_inside_one_message_sees_the_earlier_specimen(tmp_path: Path) -> None:
    both = [
        specimen("S2", {"potassium": 5.0}, hours=24),
        specimen("S1", {"potassium": 3.8}),
    ]
    s2, s1 = screen_one(tmp_path, both)
    assert s2.specimen_id == "S2" and "delta" in flags(s2, "potassium")
    assert "delta" not in flags(s1, "potassium")


def test_an_expired_previous_result_does_not_count(tmp_path: Path) -> None:
    # potassium: validity 168 h; a result 8 days old is ignored
    old = specimen("S1", {"potassium": 3.6})
    new = specimen("S2", {"potassium": 5.0}, hours=8 * 24)
    _, b = screen_one(tmp_path, old, new)
    k = next(r for r in b.results if r.analyte == "potassium")
    assert k.previous is None and "delta" not in k.flags
    # within validity but outside the delta window (72 h): shown, not flagged
    mid = specimen("S3", {"potassium": 3.6}, hours=9 * 24)
    late = specimen("S4", {"potassium": 5.0}, hours=9 * 24 + 100)
    _, d = screen_one(tmp_path, mid, late)
    k = next(r for r in d.results if r.analyte == "potassium")
    assert k.previous is not None and "delta" not in k.flags


def test_a_resent_message_is_not_its_own_delta_and_raises_no_new_alert(tmp_path: Path) -> None:
    first = specimen("S1", {"potassium": 3.8})
    second = specimen("S2", {"potassium": 6.9}, hours=12)

    async def work(screener: LabScreener) -> tuple[SpecimenOutcome, SpecimenOutcome, int]:
        await screener.analyze([first])
        a = (await screener.analyze([second]))[0]
        b = (await screener.analyze([second]))[0]  # the LIS resends
        return a, b, len(screener.store.alerts(state=None))

    a, b, stored = asyncio.run(with_screener(tmp_path, work))
    assert a.alert_ids == b.alert_ids and len(a.alert_ids) == 2  # critical + delta
    assert b.results[0].previous is not None and b.results[0].previous.specimen_id == "S1"
    assert stored == 2


def test_edta_contamination(tmp_path: Path) -> None:
    values = {**NORMAL, "potassium": 7.9, "calcium": 5.9, "magnesium": 1.3, "alp": 21}
    (out,) = screen_one(tmp_path, specimen("S1", values))
    assert "edta_contamination" in rules(out)
    for analyte in ("potassium", "calcium", "magnesium", "alp"):
        assert "edta_contamination" in flags(out, analyte)
    # a critical potassium from a contaminated tube is held for recollection, not phoned
    assert out.verdict is Verdict.review


def test_true_hyperkalaemia_is_not_called_edta(tmp_path: Path) -> None:
    (out,) = screen_one(tmp_path, specimen("S1", {**NORMAL, "potassium": 6.9}))
    assert "edta_contamination" not in rules(out)
    assert out.verdict is Verdict.critical


def test_haemolysis_by_index_and_by_pattern(tmp_path: Path) -> None:
    pattern = {**NORMAL, "potassium": 5.9, "ldh": 480, "ast": 95}
    by_index = {**NORMAL, "potassium": 4.9, "hemolysis_index": 180}
    index_clear = {**pattern, "hemolysis_index": 10}
    a, b, c = screen_one(
        tmp_path,
        specimen("S1", pattern, patient_id="A"),
        specimen("S2", by_index, patient_id="B"),
        specimen("S3", index_clear, patient_id="C"),
    )
    assert "haemolysis" in rules(a) and "haemolysis" in flags(a, "ldh")
    assert "haemolysis" in rules(b) and "haemolysis" in flags(b, "potassium")
    assert "haemolysis" not in rules(c)  # a clear index rules it out
    assert a.verdict is Verdict.review and b.verdict is Verdict.review


def test_iv_fluid_contamination_saline_and_dextrose(tmp_path: Path) -> None:
    diluted = {
        **NORMAL,
        "calcium": 7.4,
        "protein_total": 5.0,
        "albumin": 2.9,
        "urea_nitrogen": 5,
        "magnesium": 1.4,
        "alp": 35,
        "potassium": 3.2,
    }
    saline = {**diluted, "chloride": 122, "sodium": 145}
    dextrose = {**diluted, "glucose": 900}
    neither = dict(diluted)
    a, b, c = screen_one(
        tmp_path,
        specimen("S1", saline, patient_id="A"),
        specimen("S2", dextrose, patient_id="B"),
        specimen("S3", neither, patient_id="C"),
    )
    assert "iv_fluid_contamination" in rules(a)
    assert "iv_fluid_contamination" in flags(a, "chloride")
    assert "iv_fluid_contamination" in rules(b)
    assert b.verdict is Verdict.review  # the critical glucose is held: recollect
    assert "iv_fluid_contamination" not in rules(c)


def test_wrong_blood_in_tube_across_messages(tmp_path: Path) -> None:
    before = specimen("S1", {"mcv": 89, "mch": 30, "rdw": 13.0, "hemoglobin": 13.5})
    # each change below its own delta limit (6 fL, 3 pg, 3 %), together improbable
    after = specimen("S2", {"mcv": 94, "mch": 32.5, "rdw": 15.0, "hemoglobin": 13.2}, hours=48)
    same_person = specimen("S3", {"mcv": 90, "mch": 30.3, "rdw": 13.3}, hours=96, patient_id="P1")
    a, b, c = screen_one(tmp_path, before, after, same_person)
    assert "wrong_blood_in_tube" in rules(b)
    assert not any("delta" in flags(b, k) for k in ("mcv", "mch", "rdw"))
    assert next(r for r in b.results if r.analyte == "mcv").interpretation == "AA"
    assert b.verdict is Verdict.review
    # S2 is suspect: it is no baseline, so S3 compares with S1 and passes
    assert "wrong_blood_in_tube" not in rules(c)
    mcv = next(r for r in c.results if r.analyte == "mcv")
    assert mcv.previous is not None and mcv.previous.specimen_id == "S1"


def test_the_anomaly_model_flags_a_discordant_panel_with_its_contributors(
    tmp_path: Path,
) -> None:
    # Hb 13.5 with Hct 52: each inside a wide interval, together impossible
    discordant = {**NORMAL, "hematocrit": 52.0, "hemoglobin": 13.5}
    (out,) = screen_one(tmp_path, specimen("S1", discordant, sex="M"))
    assert out.anomaly is not None and out.anomaly.present
    assert out.anomaly.probability > out.anomaly.threshold
    assert "multivariate_anomaly" in rules(out)
    top = max(out.results, key=lambda r: r.anomaly_contribution or 0)
    assert top.analyte in {"hematocrit", "hemoglobin"}
    total = sum(r.anomaly_contribution or 0 for r in out.results)
    assert total > 0
    assert out.verdict is Verdict.review


def test_history_and_alerts_survive_a_restart(tmp_path: Path) -> None:
    first = specimen("S1", {"potassium": 3.8})
    second = specimen("S2", {"potassium": 7.0}, hours=6)

    async def before(screener: LabScreener) -> list[str]:
        await screener.analyze([first])
        return (await screener.analyze([second]))[0].alert_ids

    async def after(screener: LabScreener) -> tuple[SpecimenOutcome, int]:
        again = (await screener.analyze([second]))[0]
        return again, len(screener.store.alerts(state=None))

    ids = asyncio.run(with_screener(tmp_path, before))
    again, stored = asyncio.run(with_screener(tmp_path, after))  # a new process, same store
    assert again.alert_ids == ids
    assert "delta" in flags(again, "potassium")
    assert stored == len(ids)
