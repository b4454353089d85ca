"""DICOM whole-slide images for tests: `wsidicomizer` (PyPI; it needs Debian's
libturbojpeg0) converts a tiled TIFF/SVS to DICOM WSI. It runs from its own venv in
the ignored .peers/wsidicomizer (`make peers`), not from aidx's: its wsidicom pins
dicomweb-client below the version aidx needs. No levels are added: a level it adds
below one tile's size gets a short JPEG tile (256 x 128), which OpenSlide refuses
("Dimensional mismatch reading JPEG"). `dicomize(..., levels=n)` adds the missing
levels down to level n - 1 (keep it at or above one tile): wsidicomizer does not carry
over the lower levels of aidx's synthetic SVS, so without it the DICOM slide has
level 0 only, and its tissue mask is read from level 0."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".peers" / "wsidicomizer" / "bin" / "python"
_CONVERT = """
import sys
from wsidicomizer import WsiDicomizer
levels = int(sys.argv[3])
WsiDicomizer.convert(
    sys.argv[1], output_path=sys.argv[2], tile_size=256, include_label=False,
    include_overview=False, include_thumbnail=False, add_missing_levels=levels > 0,
    include_levels=list(range(levels)) if levels > 0 else None,
)
"""


def missing() -> str | None:
    return None if PYTHON.exists() else f"{PYTHON} (run `make peers`)"


def dicomize(slide: Path, out_dir: Path, levels: int = 0) -> list[Path]:
    """The DICOM WSI instances of `slide`, written to `out_dir`, level 0 first;
    `levels`: see the module's docstring (0: as wsidicomizer finds them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(PYTHON), "-c", _CONVERT, str(slide), str(out_dir), str(levels)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    files = sorted(out_dir.glob("*.dcm"))

    def pixels(path: Path) -> int:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.TotalPixelMatrixColumns) * int(ds.TotalPixelMatrixRows)

    return sorted(files, key=pixels, reverse=True)
