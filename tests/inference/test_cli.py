"""The `aidx` command line, run as a real process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODELS, dicom_bytes


def aidx(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aidx.service", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "AIDX_VAR_DIR": str(cwd / "var")},
    )


def test_models_list_and_verify_show_version_backend_device_and_checksum(tmp_path: Path) -> None:
    listed = aidx("models", "list", "--repository", str(MODELS), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "cxr_pneumonia" in listed.stdout and "onnxruntime" in listed.stdout
    assert "cpu" in listed.stdout and "ok" in listed.stdout
    verified = aidx("models", "verify", "--repository", str(MODELS), cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_verify_fails_on_a_checksum_mismatch(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(MODELS / "cxr_pneumonia", repo / "cxr_pneumonia")
    with (repo / "cxr_pneumonia" / "1" / "model.onnx").open("ab") as fh:
        fh.write(b"tampered")
    verified = aidx("models", "verify", "--repository", str(repo), cwd=tmp_path)
    assert verified.returncode == 1
    assert "MISMATCH" in verified.stdout


@pytest.mark.slow
def test_analyze_prints_findings_and_reports_bad_files(tmp_path: Path) -> None:
    (tmp_path / "chest.dcm").write_bytes(dicom_bytes("RG1_UNCR.dcm"))
    (tmp_path / "ct.dcm").write_bytes(dicom_bytes("CT_small.dcm"))
    result = aidx("analyze", "chest.dcm", "ct.dcm", "--repository", str(MODELS), cwd=tmp_path)
    assert result.returncode == 1  # one file was refused
    assert "Pneumonia" in result.stdout and "SCT 233604007" in result.stdout
    assert "ct.dcm: unsupported_modality" in result.stdout
