"""Series-selection rules as data (in the spirit of MONAI Deploy's rules): which
instances go to which pipeline, by DICOM attributes. A rules file is YAML:

    rules:
      - name: chest-radiograph
        pipeline: cxr
        match:
          Modality: [CR, DX]                 # any of these (case-insensitive)
          BodyPartExamined: [CHEST, THORAX]
          ImageType: [ORIGINAL]              # multi-valued: any value matches
          SliceThickness: {min: 0.5, max: 5} # numeric range (mm)

The first matching rule wins; an instance no rule matches is not analysed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import yaml

SERIES_PIPELINES = {"ct", "wsi"}  # pipelines that take a whole series, not one instance
# series pipelines given the series' files, not their bytes (a whole slide is too large)
FILE_PIPELINES = {"wsi"}

DEFAULT_RULES: dict[str, Any] = {
    "rules": [
        {
            "name": "chest-radiograph",
            "pipeline": "cxr",
            "match": {
                "Modality": ["CR", "DX"],
                "BodyPartExamined": ["CHEST", "THORAX", "LUNG", "PORTABLE CHEST"],
            },
        },
        {  # whole axial chest CT series (the CT pipeline checks their geometry)
            "name": "chest-ct",
            "pipeline": "ct",
            "match": {
                "Modality": ["CT"],
                "BodyPartExamined": ["CHEST", "THORAX", "LUNG"],
                "ImageType": ["AXIAL"],
            },
        },
        {  # a whole slide (the WSI intake checks that it is VL Whole Slide Microscopy)
            "name": "whole-slide",
            "pipeline": "wsi",
            "match": {"Modality": ["SM"]},
        },
    ]
}


@dataclass(frozen=True)
class Rule:
    name: str
    pipeline: str
    match: dict[str, Any]

    def matches(self, ds: pydicom.Dataset) -> bool:
        return all(_attribute_matches(ds.get(k), want) for k, want in self.match.items())


def _values(element: Any) -> list[str]:
    if element is None:
        return []
    if isinstance(element, (list, tuple)) or type(element).__name__ == "MultiValue":
        return [str(v).strip().upper() for v in element]
    return [str(element).strip().upper()]


def _attribute_matches(value: Any, want: Any) -> bool:
    if isinstance(want, dict):  # numeric range
        try:
            number = float(value)
        except (TypeError, ValueError):
            return False
        return (
            float(want.get("min", float("-inf"))) <= number <= float(want.get("max", float("inf")))
        )
    allowed = {str(w).strip().upper() for w in (want if isinstance(want, list) else [want])}
    return bool(allowed.intersection(_values(value)))


def load_rules(path: Path | None) -> list[Rule]:
    data = DEFAULT_RULES if path is None else yaml.safe_load(path.read_text())
    rules = []
    for item in data.get("rules", []):
        if not isinstance(item.get("match"), dict) or not item.get("pipeline"):
            raise ValueError(f"routing rule {item.get('name')!r} needs 'pipeline' and 'match'")
        rules.append(
            Rule(str(item.get("name", item["pipeline"])), str(item["pipeline"]), item["match"])
        )
    return rules


def route(rules: list[Rule], ds: pydicom.Dataset) -> Rule | None:
    return next((rule for rule in rules if rule.matches(ds)), None)
