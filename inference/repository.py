"""The model repository, in Triton's layout (data, not code):

    models/<name>/config.pbtxt          Triton's ModelConfig, parsed by Triton's own proto
    models/<name>/<version>/model.onnx
    models/<name>/card.md               YAML front matter (labels, thresholds, sha256) + prose
    models/<name>/<version>/card.md     a candidate version's own card (optional)

The same config.pbtxt serves aidx and a real Triton Inference Server. The card is
validated here, once, against the config (inference/model_card.py); a card that
does not validate keeps its model out of service with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from aidx.inference.errors import AidxError
from aidx.inference.model_card import CardError, ModelCard, load_card

ModelConfig = model_config_pb2.ModelConfig


class RepositoryError(AidxError):
    code = "model_repository_error"


@dataclass(frozen=True)
class ModelEntry:
    """One model as found on disk; `problem` says why it cannot serve (None: it can)."""

    name: str
    directory: Path
    config: Any  # model_config_pb2.ModelConfig
    card: ModelCard | None
    version: int
    model_path: Path
    sha256: str | None = None
    problem: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def max_batch_size(self) -> int:
        return int(self.config.max_batch_size)


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def parse_config(path: Path) -> Any:
    try:
        return text_format.Parse(path.read_text(), ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{path}: not a valid Triton model config: {exc}") from exc


def _versions(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _pick_version(directory: Path, config: Any, wanted: int | None = None) -> int:
    """`wanted` when given (a setting, or the version a card names), else Triton's
    version_policy: the highest of the `specific` versions, or the latest."""
    versions = _versions(directory)
    if not versions:
        raise RepositoryError(f"{directory}: no numeric version folder")
    if wanted is not None:
        if wanted not in versions:
            raise RepositoryError(f"{directory}: version {wanted} has no folder")
        return wanted
    policy = config.version_policy
    if policy.WhichOneof("policy_choice") == "specific" and policy.specific.versions:
        listed = [v for v in versions if v in set(policy.specific.versions)]
        if not listed:
            raise RepositoryError(f"{directory}: none of the versions the policy names exists")
        return max(listed)
    return versions[-1]


def _read_card(path: Path, config: Any) -> tuple[ModelCard | None, str | None]:
    """(card, None), (None, None) when there is no card, or (None, why it is invalid)."""
    if not path.exists():
        return None, None
    try:
        return load_card(path, config), None
    except CardError as exc:
        return None, exc.message


def _serving_version(directory: Path, config: Any, card: ModelCard | None) -> int:
    """The version the model card describes when its folder exists (a candidate folder
    beside it does not take over), else the version_policy's."""
    if card is not None and (directory / str(card.version)).is_dir():
        return card.version
    return _pick_version(directory, config)


def _is_onnx(config: Any) -> bool:
    return bool(config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime")


def _listed_file_problem(directory: Path, card: ModelCard, model_relative: str) -> str | None:
    """Each other file the card lists (e.g. the OOD reference) is there, unchanged."""
    for relative, expected in card.files_sha256.items():
        path = directory / relative
        if relative == model_relative:
            continue
        if not path.is_file():
            return f"{relative} is listed in card.md but missing"
        if sha256_file(path) != expected:
            return f"checksum mismatch for {relative}; the model stays out of service"
    return None


def _checksum_problem(
    card: ModelCard | None, relative: str, digest: str | None
) -> tuple[str | None, dict[str, bool]]:
    checks: dict[str, bool] = {}
    if card is None:
        return "card.md is missing: every model needs a card with its sha256", checks
    if digest is None:
        return None, checks
    expected = card.files_sha256.get(relative)
    checks["sha256"] = expected == digest
    if expected is None:
        return f"card.md lists no sha256 for {relative}", checks
    if expected != digest:
        return (
            f"checksum mismatch for {relative}: card says {expected[:12]}..., "
            f"file is {digest[:12]}...; the model stays out of service"
        ), checks
    return None, checks


def load_entry(directory: Path, *, verify: bool = True, version: int | None = None) -> ModelEntry:
    """Read one model folder at `version` (None: the one that serves, see
    `_serving_version`). Problems become `problem`, so one bad model never hides the
    others; only a missing config or version folder raises. A version asked for by
    name whose folder has its own card.md (a candidate's, as its recipe wrote it) is
    described by that card."""
    config = parse_config(directory / "config.pbtxt")
    name = config.name or directory.name
    card, problem = _read_card(directory / "card.md", config)
    if version is None:
        version = _serving_version(directory, config, card)
    else:  # asked for by name (a setting, a shadow): its own card, if it has one
        _pick_version(directory, config, version)
        if (directory / str(version) / "card.md").is_file():
            card, problem = _read_card(directory / str(version) / "card.md", config)
    filename = config.default_model_filename or "model.onnx"
    model_path = directory / str(version) / filename
    relative = f"{version}/{filename}"
    if problem is None and not model_path.is_file():
        problem = f"{relative} is missing"
    if problem is None and not _is_onnx(config):
        problem = f"platform {config.platform or config.backend!r} is not served in-process"
    digest = sha256_file(model_path) if model_path.is_file() and verify else None
    checks: dict[str, bool] = {}
    if problem is None:
        problem, checks = _checksum_problem(card, relative, digest)
    if problem is None and card is not None and verify:
        problem = _listed_file_problem(directory, card, relative)
    return ModelEntry(name, directory, config, card, version, model_path, digest, problem, checks)


def scan(
    root: Path, enabled: list[str] | None = None, serving: Mapping[str, int] | None = None
) -> list[ModelEntry]:
    """Every model's serving entry; `serving` names a version for some (a setting, over
    the card and the version_policy)."""
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} does not exist")
    serving = serving or {}
    entries = []
    for directory in sorted(p for p in root.iterdir() if (p / "config.pbtxt").is_file()):
        if enabled is not None and directory.name not in enabled:
            continue
        entries.append(load_entry(directory, version=serving.get(directory.name)))
    return entries
