"""A real screener for tests: the shipped catalogue, a SQLite store in a temp folder,
the labs_anomaly model from the repository behind the real batcher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from aidx.inference.serving import ModelService
from aidx.inference.settings import Settings
from aidx.inference.store import create_store, init_store
from aidx.pipelines.labs.catalogue import load_catalogue
from aidx.pipelines.labs.screening import LabScreener
from aidx.pipelines.labs.store import LabStore
from aidx.pipelines.labs.types import LabResultIn, SpecimenIn

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
T = TypeVar("T")

# key -> (LOINC, unit as sent)
CODES = {
    "sodium": ("2951-2", "mmol/L"),
    "potassium": ("2823-3", "mmol/L"),
    "chloride": ("2075-0", "mmol/L"),
    "bicarbonate": ("2028-9", "mmol/L"),
    "urea_nitrogen": ("3094-0", "mg/dL"),
    "creatinine": ("2160-0", "mg/dL"),
    "glucose": ("2345-7", "mg/dL"),
    "calcium": ("17861-6", "mg/dL"),
    "magnesium": ("19123-9", "mg/dL"),
    "phosphate": ("2777-1", "mg/dL"),
    "albumin": ("1751-7", "g/dL"),
    "protein_total": ("2885-2", "g/dL"),
    "alt": ("1742-6", "U/L"),
    "ast": ("1920-8", "U/L"),
    "alp": ("6768-6", "U/L"),
    "bilirubin_total": ("1975-2", "mg/dL"),
    "ldh": ("2532-0", "U/L"),
    "hemoglobin": ("718-7", "g/dL"),
    "hematocrit": ("4544-3", "%"),
    "wbc": ("6690-2", "10*3/uL"),
    "platelets": ("777-3", "10*3/uL"),
    "mcv": ("787-2", "fL"),
    "mch": ("785-6", "pg"),
    "rdw": ("788-0", "%"),
    "hemolysis_index": ("AIDX-HIL-H", "mg/dL"),
}

# A healthy 50-year-old woman's 20-analyte panel, in the units above.
NORMAL = {
    "sodium": 140,
    "potassium": 4.2,
    "chloride": 103,
    "bicarbonate": 25,
    "urea_nitrogen": 14,
    "creatinine": 0.8,
    "glucose": 92,
    "calcium": 9.4,
    "magnesium": 2.0,
    "phosphate": 3.5,
    "albumin": 4.3,
    "protein_total": 7.1,
    "alt": 20,
    "ast": 22,
    "alp": 70,
    "hemoglobin": 13.5,
    "hematocrit": 40,
    "mcv": 89,
    "mch": 30,
    "rdw": 13.0,
}


def specimen(
    specimen_id: str,
    values: dict[str, float | str],
    *,
    patient_id: str = "P1",
    hours: float = 0.0,
    sex: str = "F",
    age_y: float = 50,
    units: dict[str, str] | None = None,
) -> SpecimenIn:
    units = units or {}
    return SpecimenIn(
        specimen_id=specimen_id,
        patient_id=patient_id,
        sex=sex,
        age_y=age_y,
        collected_at=T0 + timedelta(hours=hours),
        results=[
            LabResultIn(code=CODES[k][0], value=v, unit=units.get(k, CODES[k][1]))
            for k, v in values.items()
        ],
        source_id=f"MSG-{specimen_id}",
    )


async def with_screener(var_dir: Path, work: Callable[[LabScreener], Awaitable[T]]) -> T:
    settings = Settings(
        mode="development",
        dev_api_key="test-development-key-0123456789",
        model_repository=ROOT / "models",
        enabled_models=["labs_anomaly"],
        var_dir=var_dir,
    )
    models = ModelService(settings)
    await models.start()
    engine = create_store(settings.store_url)
    init_store(engine)
    try:
        return await work(LabScreener(load_catalogue(), LabStore(engine), models))
    finally:
        await models.stop()
        engine.dispose()
