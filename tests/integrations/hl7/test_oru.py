"""ORU^R01 parsing, and ACKs and result messages that hl7apy accepts in strict mode."""

from __future__ import annotations

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from aidx.adapters.labs_hl7 import build_oru, parse_oru
from aidx.integrations.hl7.message import Hl7Error, build_ack, parse_ts
from aidx.pipelines.labs.types import (
    ResultOutcome,
    ResultStatus,
    SpecimenOutcome,
    Verdict,
)

from .messages import oru


def strict(data: bytes):  # type: ignore[no-untyped-def]
    message = parse_message(data.decode(), validation_level=VALIDATION_LEVEL.STRICT)
    message.validate()
    return message


def test_several_patients_orders_and_results() -> None:
    data = oru(
        "CTRL-7",
        patients=(
            (
                "MRN1",
                "M",
                [
                    ("F1", ["NM|2823-3^K^LN||4.0|mmol/L^^UCUM|||||F"]),
                    (
                        "F2",
                        ["NM|718-7^Hb^LN||13.1|g/dL^^UCUM|||||C", "ST|5902-2^PT^LN||<5|s|||||F"],
                    ),
                ],
            ),
            ("MRN2", "F", [("F3", ["SN|2345-7^Glu^LN||=^101|mg/dL^^UCUM|||||F"])]),
        ),
    )
    msg = parse_oru(data)
    assert msg.control_id == "CTRL-7" and msg.version == "2.5.1"
    assert msg.sending_application == "LIS"
    assert [(s.patient_id, s.specimen_id) for s in msg.specimens] == [
        ("MRN1", "F1"),
        ("MRN1", "F2"),
        ("MRN2", "F3"),
    ]
    f2 = msg.specimens[1]
    assert [(r.code, r.value, r.unit, r.status) for r in f2.results] == [
        ("718-7", "13.1", "g/dL", "C"),
        ("5902-2", "<5", "s", "F"),
    ]
    assert msg.specimens[2].results[0].value == "101"  # SN "=^101"
    assert msg.specimens[0].sex == "M" and msg.specimens[0].age_y is not None
    assert msg.specimens[0].collected_at.isoformat() == "2026-03-01T08:00:00+00:00"


@pytest.mark.parametrize(
    ("data", "ack_code", "match"),
    [
        (b"\x00\xff\xfegarbage", "AR", "MSH"),
        (b"PID|1||X\r", "AR", "MSH"),
        (oru(version="2.2"), "AR", "version"),
        (oru().replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01"), "AR", "ORU"),
        (oru().replace(b"\rPV1|", b"\rP!1|"), "AR", "bad segment"),
        (oru().replace(b"|F|||20260301081000", b"||||20260301081000"), "AE", "OBX-11"),
        (oru().replace(b"MRN1001^^^HOSP^MR", b""), "AE", "PID-3"),
        (oru().replace(b"|202603010800|", b"|yesterday|"), "AE", "OBR-7"),
        (oru().replace(b"MSG00001", b""), "AR", "MSH-10"),
    ],
)
def test_malformed_messages_say_why(data: bytes, ack_code: str, match: str) -> None:
    with pytest.raises(Hl7Error, match=match) as caught:
        parse_oru(data)
    assert caught.value.ack_code == ack_code


def test_acks_parse_in_hl7apy_strict_mode() -> None:
    for code in ("AA", "AE", "AR"):
        ack = strict(build_ack(code, control_id="MSG|1", text="bad ^ segment", error_code="101"))
        assert ack.msa.msa_1.value == code
        assert ack.msa.msa_2.value == "MSG\\F\\1"  # escaped as HL7 requires


def test_the_result_message_carries_obx8_flags_and_parses_strictly() -> None:
    from datetime import UTC, datetime

    from aidx.inference.reports import Coding

    outcome = SpecimenOutcome(
        specimen_id="SPC-1",
        patient_id="MRN1",
        collected_at=datetime(2026, 3, 1, 8, tzinfo=UTC),
        verdict=Verdict.critical,
        reasons=[],
        results=[
            ResultOutcome(
                code="2823-3",
                concept=Coding(scheme="LN", code="2823-3", meaning="Potassium"),
                analyte="potassium",
                value=7.1,
                unit="mmol/L",
                value_canonical=7.1,
                unit_canonical="mmol/L",
                status=ResultStatus.screened,
                interpretation="HH",
                reference_low=3.5,
                reference_high=5.1,
            )
        ],
    )
    message = strict(build_oru([outcome], control_id="OUT1"))
    obx = message.oru_r01_patient_result.oru_r01_order_observation.oru_r01_observation.obx
    assert obx.obx_8.value == "HH" and obx.obx_11.value == "F" and obx.obx_5.value == "7.1"


def test_timestamps() -> None:
    assert parse_ts("20260301").isoformat() == "2026-03-01T00:00:00+00:00"  # type: ignore[union-attr]
    ts = parse_ts("202603010815-0500")
    assert ts is not None and ts.isoformat() == "2026-03-01T08:15:00-05:00"
    assert parse_ts("2026-03-01") is None


def test_sn_comparators_are_kept_in_and_out() -> None:
    from datetime import UTC, datetime

    from aidx.inference.reports import Coding
    from aidx.pipelines.labs.types import Comparator, Reason

    data = oru(
        "CTRL-SN",
        patients=(
            (
                "MRN1",
                "M",
                [
                    (
                        "F1",
                        [
                            "SN|89579-7^TnI^LN||<^3|ng/L^^UCUM|||||F",
                            "SN|2951-2^Na^LN||^140|mmol/L|||||F",
                        ],
                    )
                ],
            ),
        ),
    )
    (result, sodium) = parse_oru(data).specimens[0].results
    assert (result.value, result.comparator) == ("3", Comparator.lt)
    assert (sodium.value, sodium.comparator) == ("140", None)
    outcome = SpecimenOutcome(
        specimen_id="SPC-1",
        patient_id="MRN1",
        collected_at=datetime(2026, 3, 1, 8, tzinfo=UTC),
        verdict=Verdict.review,
        reasons=[
            Reason(rule="haemolysis", message="haemolysis: K, LDH and AST are unreliable"),
            Reason(rule="sex_unknown", message="not assessed (sex_unknown): creatinine"),
        ],
        results=[
            ResultOutcome(
                code="89579-7",
                concept=Coding(scheme="LN", code="89579-7", meaning="Troponin I"),
                analyte="troponin_i_hs",
                value=3,
                comparator=Comparator.lt,
                unit="ng/L",
                value_canonical=3.0,
                unit_canonical="ng/L",
                status=ResultStatus.screened,
                interpretation="N",
                reference_low=0,
                reference_high=34,
            )
        ],
    )
    message = strict(build_oru([outcome], control_id="OUT2"))
    order = message.oru_r01_patient_result.oru_r01_order_observation
    obx = order.oru_r01_observation.obx
    assert obx.obx_2.value == "SN" and obx.obx_5.value == "<^3"
    notes = [nte.nte_3.value for nte in order.children if nte.name == "NTE"]
    assert notes[0] == "verdict: review"
    assert notes[1].startswith("haemolysis: ") and notes[2].startswith("sex_unknown: ")
