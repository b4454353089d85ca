"""Writing a model's drift reference (inference/drift.py) into its folder: the file
`<version>/drift.json` beside the weights, its sha256 in the card's `files` (so a
changed reference keeps the model out of service, as a changed weight file does), and
a short section of prose saying what it was computed from."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

from aidx.inference.drift import REFERENCE_FILE, DriftReference
from aidx.inference.files import atomic_write
from aidx.inference.model_card import (
    CardError,
    load_card,
    parse_card_text,
    render_card,
    with_prose_section,
)
from aidx.inference.repository import parse_config

SECTION_TITLE = "## Drift reference"


def prose(reference: DriftReference, file: str) -> str:
    numeric = sorted(n for n, f in reference.features.items() if f.kind == "numeric")
    categorical = sorted(n for n, f in reference.features.items() if f.kind == "categorical")
    text = (
        f"`{file}` holds the distribution of what the model saw and said on its reference "
        f"data, {reference.dataset} ({reference.n} inputs, analysed as served). The service "
        "compares each model's last N observations and its last days with it "
        "(`GET /v1/models/{name}/drift`, `aidx_drift_*` on /metrics): population stability "
        "index on the reference's deciles and a KS test for the numbers "
        f"({', '.join(numeric) or 'none'}), PSI and a chi-square test for the categories "
        f"({', '.join(categorical) or 'none'})."
    )
    return f"{SECTION_TITLE}\n\n{textwrap.fill(text, width=84)}"


def write_reference(model_dir: Path, version: int, reference: DriftReference) -> Path:
    """Write the reference into `model_dir/<version>/` and the card's `files` and
    prose; the card is validated against config.pbtxt before it replaces the old."""
    file = f"{version}/{REFERENCE_FILE}"
    data = reference.to_json()
    card_path = model_dir / "card.md"
    front, body = parse_card_text(card_path.read_text(encoding="utf-8"))
    files = {**front.files, file: hashlib.sha256(data).hexdigest()}
    front = front.model_copy(update={"files": files})
    staged = model_dir / ".card.md.staged"
    body = with_prose_section(body, SECTION_TITLE, prose(reference, file))
    staged.write_text(render_card(front, body), "utf-8")
    try:
        load_card(staged, parse_config(model_dir / "config.pbtxt"))
    except CardError:
        staged.unlink()
        raise
    atomic_write(model_dir / file, data)
    staged.replace(card_path)
    return model_dir / file
