"""The analyte catalogue: LOINC codes, canonical UCUM units and conversions, reference
intervals by sex and age band, critical and delta limits, validity periods.

The limits are data (`catalogue.yaml`, versioned, each limit citing its source);
this module only reads, checks and indexes them. `Catalogue.tables` turns the file
into arrays (one column per analyte) so that the rules run vectorised over a batch.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aidx.inference.errors import AidxError


class CatalogueError(AidxError):
    code = "catalogue_invalid"


class Sex(enum.IntEnum):
    """Index into the reference tables; `unknown` has an interval only where both
    sexes share it (else the result is not assessed: `RefState.sex_unknown`)."""

    female = 0
    male = 1
    unknown = 2

    @classmethod
    def parse(cls, value: str | Sex | None) -> Sex:
        if isinstance(value, Sex):
            return value
        text = (value or "").strip().lower()
        return {
            "f": cls.female,
            "female": cls.female,
            "m": cls.male,
            "male": cls.male,
        }.get(text, cls.unknown)


class RefState(enum.IntEnum):
    """Whether a reference interval applies to a patient's result, and if not why
    (the names are the engine's `NotAssessedReason` codes)."""

    assessed = 0
    no_reference_interval = 1  # none for this age (and sex)
    sex_unknown = 2  # the sexes' intervals differ and the sex is unknown
    age_unknown = 3  # the interval depends on age and the age is unknown


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(d|w|mo|y)\s*$")
_YEARS_PER = {"d": 1 / 365.25, "w": 7 / 365.25, "mo": 1 / 12, "y": 1.0}


def parse_age_y(value: float | str) -> float:
    """An age bound in years: a number, or "15d", "6w", "3mo", "2y"."""
    if isinstance(value, int | float):
        return float(value)
    match = _AGE.match(value)
    if match is None:
        raise ValueError(f"age {value!r} is not a number of years nor like 15d, 6w, 3mo, 2y")
    return float(match[1]) * _YEARS_PER[match[2]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Interval(_Strict):
    low: float | None = None
    high: float | None = None
    sex: str = "any"
    age_y: tuple[float, float] = (0.0, 150.0)
    source: str

    @field_validator("sex")
    @classmethod
    def _sex(cls, value: str) -> str:
        if value not in ("any", "male", "female"):
            raise ValueError("sex must be any, male or female")
        return value

    @field_validator("age_y", mode="before")
    @classmethod
    def _age(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) == 2:
            return tuple(parse_age_y(v) for v in value)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.age_y[0] >= self.age_y[1]:
            raise ValueError(f"age band {self.age_y} is empty")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"interval {self.low}-{self.high} is empty")
        return self

    def overlaps(self, other: Interval) -> bool:
        return (
            self.sex == other.sex
            and self.age_y[0] < other.age_y[1]
            and other.age_y[0] < self.age_y[1]
        )


class Limits(_Strict):
    low: float | None = None
    high: float | None = None
    source: str


class Rcv(_Strict):
    cv_i: float = Field(gt=0)  # within-subject biological variation, %
    cv_a: float = Field(ge=0)  # analytical, %

    @property
    def percent(self) -> float:
        return math.sqrt(2) * 1.96 * math.hypot(self.cv_i, self.cv_a)


class Delta(_Strict):
    abs: float | None = Field(default=None, gt=0)
    percent: float | None = Field(default=None, gt=0)
    rcv: Rcv | None = None
    window_h: float = Field(gt=0)
    source: str

    @model_validator(mode="after")
    def _one_kind(self) -> Delta:
        if sum(x is not None for x in (self.abs, self.percent, self.rcv)) != 1:
            raise ValueError("a delta limit is exactly one of abs, percent or rcv")
        return self

    @property
    def percent_limit(self) -> float | None:
        if self.percent is not None:
            return self.percent
        return self.rcv.percent if self.rcv is not None else None


class Analyte(_Strict):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    loinc: list[str] = Field(min_length=1)
    name: str
    unit: str
    units: dict[str, float | tuple[float, float]] = Field(default_factory=dict)
    plausible: tuple[float, float]
    reference: list[Interval] = Field(default_factory=list)
    critical: Limits | None = None
    delta: Delta | None = None
    validity_h: float = Field(ge=0)
    model: bool = False
    wbit: float | None = Field(default=None, gt=0)  # per-analyte scale of the WBIT index

    def to_canonical(self, value: float, unit: str) -> float | None:
        """`value` in `unit` in the canonical unit; None when the unit is not listed."""
        if unit == self.unit:
            return value
        conversion = self.units.get(unit)
        if conversion is None:
            return None
        if isinstance(conversion, tuple):
            factor, offset = conversion
            return value * factor + offset
        return value * conversion


@dataclass(frozen=True)
class Tables:
    """The catalogue as arrays, analytes along the last axis (index = `Catalogue.index`).

    NaN marks 'no such limit'. Reference tables are [sex (3), age band, analyte];
    `ref_state` says why an interval is NaN (`RefState`); `ref_index` names the
    interval that filled a cell: its position in its analyte's `reference` list
    (`NO_INTERVAL` where none did)."""

    age_edges_y: np.ndarray  # band b is [edges[b], edges[b+1])
    ref_low: np.ndarray
    ref_high: np.ndarray
    ref_state: np.ndarray  # [3, bands, K] int RefState
    ref_index: np.ndarray  # [3, bands, K] int, into Analyte.reference; NO_INTERVAL: none
    age_dependent: np.ndarray  # [K] bool: the interval (or its absence) varies with age
    crit_low: np.ndarray
    crit_high: np.ndarray
    plausible_low: np.ndarray
    plausible_high: np.ndarray
    delta_abs: np.ndarray
    delta_percent: np.ndarray
    delta_window_h: np.ndarray
    validity_h: np.ndarray
    wbit_scale: np.ndarray

    def age_band(self, age_y: np.ndarray) -> np.ndarray:
        bands = np.searchsorted(self.age_edges_y, age_y, side="right") - 1
        return np.clip(bands, 0, len(self.age_edges_y) - 2)


NO_INTERVAL = -1


class Catalogue(_Strict):
    version: str
    sources: dict[str, str]
    # short names a technician reads beside an interval ("Harriet Lane"); default: the key
    source_names: dict[str, str] = Field(default_factory=dict)
    analytes: list[Analyte]

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        seen_keys: set[str] = set()
        seen_codes: set[str] = set()
        for a in self.analytes:
            if a.key in seen_keys:
                raise ValueError(f"analyte {a.key!r} is listed twice")
            seen_keys.add(a.key)
            for code in a.loinc:
                if code in seen_codes:
                    raise ValueError(f"code {code!r} is listed for two analytes")
                seen_codes.add(code)
            cited = [i.source for i in a.reference]
            cited += [x.source for x in (a.critical, a.delta) if x is not None]
            missing = [s for s in cited if s not in self.sources]
            if missing:
                raise ValueError(f"{a.key}: unknown source(s) {missing}")
            if a.plausible[0] >= a.plausible[1]:
                raise ValueError(f"{a.key}: plausible range is empty")
            _check_age_bands(a)
        unknown = sorted(set(self.source_names) - set(self.sources))
        if unknown:
            raise ValueError(f"source_names names unknown source(s) {unknown}")
        return self

    def source_name(self, key: str) -> str:
        return self.source_names.get(key, key)

    @cached_property
    def index(self) -> dict[str, int]:
        return {a.key: i for i, a in enumerate(self.analytes)}

    @cached_property
    def by_code(self) -> dict[str, Analyte]:
        return {code: a for a in self.analytes for code in a.loinc}

    def analyte(self, key: str) -> Analyte:
        return self.analytes[self.index[key]]

    @property
    def size(self) -> int:
        return len(self.analytes)

    @cached_property
    def tables(self) -> Tables:
        return _build_tables(self.analytes)


_AGE_TOLERANCE_Y = 1e-9


def age_gaps(intervals: list[Interval], sex: str) -> list[tuple[float, float]]:
    """Ages [from, to) left without an interval for one sex between its first and last
    band: a band that starts later than its predecessor ends (a typo in the file, as a
    child's result there would silently get no interval)."""
    spans = sorted(i.age_y for i in intervals if i.sex in ("any", sex))
    gaps: list[tuple[float, float]] = []
    reach = spans[0][1] if spans else 0.0
    for start, end in spans[1:]:
        if start > reach + _AGE_TOLERANCE_Y:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def _check_age_bands(analyte: Analyte) -> None:
    """Intervals of one sex never overlap in age and leave no gap between bands."""
    for n, first in enumerate(analyte.reference):
        if any(first.overlaps(second) for second in analyte.reference[n + 1 :]):
            raise ValueError(f"{analyte.key}: two {first.sex} intervals overlap in age")
    for sex in ("female", "male"):
        gaps = age_gaps(analyte.reference, sex)
        if gaps:
            start, end = gaps[0]
            raise ValueError(
                f"{analyte.key}: no {sex} interval from {start:.4g} to {end:.4g} y,"
                " between two age bands"
            )


def _chosen(analyte: Analyte, sex: Sex, age_y: float) -> Interval | None:
    """The interval for one sex at one age: sex-specific over `any`; None: none."""
    fits = [
        i
        for i in analyte.reference
        if i.sex in ("any", sex.name) and i.age_y[0] <= age_y < i.age_y[1]
    ]
    return sorted(fits, key=lambda i: i.sex == "any")[0] if fits else None


def _bounds(interval: Interval | None) -> tuple[float, float]:
    if interval is None:
        return np.nan, np.nan
    low = -np.inf if interval.low is None else interval.low
    high = np.inf if interval.high is None else interval.high
    return low, high


def _position(analyte: Analyte, interval: Interval | None) -> int:
    if interval is None:
        return NO_INTERVAL
    return next(n for n, i in enumerate(analyte.reference) if i is interval)


def _reference_tables(
    analytes: list[Analyte], edges: list[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Low, high, RefState and the interval's position per [sex, band, analyte].

    An unknown sex gets the interval both sexes share; where two sex-specific
    intervals happen to have the same bounds, the female one is named."""
    bands, k = len(edges) - 1, len(analytes)
    low = np.full((3, bands, k), np.nan)
    high = np.full((3, bands, k), np.nan)
    state = np.full((3, bands, k), int(RefState.no_reference_interval), dtype=np.int64)
    index = np.full((3, bands, k), NO_INTERVAL, dtype=np.int64)
    for j, analyte in enumerate(analytes):
        for b in range(bands):
            mid = (edges[b] + edges[b + 1]) / 2
            female, male = (_chosen(analyte, s, mid) for s in (Sex.female, Sex.male))
            for sex, interval in ((Sex.female, female), (Sex.male, male)):
                low[sex, b, j], high[sex, b, j] = _bounds(interval)
                index[sex, b, j] = _position(analyte, interval)
                if interval is not None:
                    state[sex, b, j] = RefState.assessed
            if female is not None and _bounds(female) == _bounds(male):
                low[Sex.unknown, b, j], high[Sex.unknown, b, j] = _bounds(female)
                index[Sex.unknown, b, j] = index[Sex.female, b, j]
                state[Sex.unknown, b, j] = RefState.assessed
            elif female is not None or male is not None:
                # knowing the sex would select an interval: never the widest of both
                state[Sex.unknown, b, j] = RefState.sex_unknown
    return low, high, state, index


def _varies_with_age(low: np.ndarray, high: np.ndarray, state: np.ndarray) -> np.ndarray:
    """[K] bool: for some sex, a band's interval (or its absence) differs from band 0's."""

    def differs(table: np.ndarray) -> np.ndarray:
        first = table[:, :1, :]
        same = (table == first) | (np.isnan(table) & np.isnan(first))
        return np.asarray(~same.all(axis=(0, 1)))

    return differs(low) | differs(high) | differs(state.astype(float))


def _build_tables(analytes: list[Analyte]) -> Tables:
    edges = sorted({0.0, 150.0} | {e for a in analytes for i in a.reference for e in i.age_y})
    ref_low, ref_high, ref_state, ref_index = _reference_tables(analytes, edges)

    def column(get: Any) -> np.ndarray:
        return np.array([np.nan if (v := get(a)) is None else v for a in analytes], dtype=float)

    return Tables(
        age_edges_y=np.asarray(edges),
        ref_low=ref_low,
        ref_high=ref_high,
        ref_state=ref_state,
        ref_index=ref_index,
        age_dependent=_varies_with_age(ref_low, ref_high, ref_state),
        crit_low=column(lambda a: a.critical.low if a.critical else None),
        crit_high=column(lambda a: a.critical.high if a.critical else None),
        plausible_low=column(lambda a: a.plausible[0]),
        plausible_high=column(lambda a: a.plausible[1]),
        delta_abs=column(lambda a: a.delta.abs if a.delta else None),
        delta_percent=column(lambda a: a.delta.percent_limit if a.delta else None),
        delta_window_h=column(lambda a: a.delta.window_h if a.delta else None),
        validity_h=column(lambda a: a.validity_h),
        wbit_scale=column(lambda a: a.wbit),
    )


def default_catalogue_path() -> Path:
    return Path(str(resources.files("aidx.pipelines.labs").joinpath("catalogue.yaml")))


def load_catalogue(path: Path | None = None) -> Catalogue:
    path = path or default_catalogue_path()
    try:
        data = yaml.safe_load(path.read_text())
        return Catalogue.model_validate(data)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise CatalogueError(f"analyte catalogue {path} is not valid: {exc}") from exc
