"""Real-shaped ORU^R01 messages, as a LIS sends them (segments end with CR)."""

from __future__ import annotations


def oru(
    control_id: str = "MSG00001",
    *,
    version: str = "2.5.1",
    patients: tuple[tuple[str, str, list[tuple[str, list[str]]]], ...] | None = None,
) -> bytes:
    """patients: (patient id, sex, [(filler order number, [OBX tails]), ...])."""
    patients = patients or (
        (
            "MRN1001",
            "F",
            [
                (
                    "SPC-1",
                    [
                        "NM|2823-3^Potassium^LN||4.1|mmol/L^mmol/L^UCUM|3.5-5.1||||F",
                        "NM|2951-2^Sodium^LN||139|mmol/L^mmol/L^UCUM|135-145||||F",
                    ],
                )
            ],
        ),
    )
    lines = [
        f"MSH|^~\\&|LIS|CENTRAL_LAB|AIDX|HOSP|20260301081500||ORU^R01^ORU_R01|{control_id}|P|"
        f"{version}"
    ]
    for p, (patient_id, sex, orders) in enumerate(patients, start=1):
        lines.append(f"PID|{p}||{patient_id}^^^HOSP^MR||DOE^JANE||19750412|{sex}")
        lines.append("PV1|1|I|WARD1^101^1")
        for o, (filler, obx) in enumerate(orders, start=1):
            lines.append(f"ORC|RE|PLC{p}{o}|{filler}")
            lines.append(
                f"OBR|{o}|PLC{p}{o}|{filler}|24323-8^Comprehensive metabolic panel^LN|||"
                f"202603010800|||||||||||||||20260301081400|||F"
            )
            for i, tail in enumerate(obx, start=1):
                lines.append(f"OBX|{i}|{tail}|||20260301081000")
    return ("\r".join(lines) + "\r").encode()


PANEL_20 = [
    "NM|2951-2^Sodium^LN||140|mmol/L^^UCUM|||||F",
    "NM|2823-3^Potassium^LN||4.2|mmol/L^^UCUM|||||F",
    "NM|2075-0^Chloride^LN||103|mmol/L^^UCUM|||||F",
    "NM|2028-9^CO2^LN||25|mmol/L^^UCUM|||||F",
    "NM|3094-0^BUN^LN||14|mg/dL^^UCUM|||||F",
    "NM|2160-0^Creatinine^LN||0.8|mg/dL^^UCUM|||||F",
    "NM|2345-7^Glucose^LN||92|mg/dL^^UCUM|||||F",
    "NM|17861-6^Calcium^LN||9.4|mg/dL^^UCUM|||||F",
    "NM|19123-9^Magnesium^LN||2.0|mg/dL^^UCUM|||||F",
    "NM|2777-1^Phosphate^LN||3.5|mg/dL^^UCUM|||||F",
    "NM|1751-7^Albumin^LN||4.3|g/dL^^UCUM|||||F",
    "NM|2885-2^Protein^LN||7.1|g/dL^^UCUM|||||F",
    "NM|1742-6^ALT^LN||20|U/L^^UCUM|||||F",
    "NM|1920-8^AST^LN||22|U/L^^UCUM|||||F",
    "NM|6768-6^ALP^LN||70|U/L^^UCUM|||||F",
    "NM|718-7^Hemoglobin^LN||13.5|g/dL^^UCUM|||||F",
    "NM|4544-3^Hematocrit^LN||40|%^^UCUM|||||F",
    "NM|787-2^MCV^LN||89|fL^^UCUM|||||F",
    "NM|785-6^MCH^LN||30|pg^^UCUM|||||F",
    "NM|788-0^RDW^LN||13.0|%^^UCUM|||||F",
]
