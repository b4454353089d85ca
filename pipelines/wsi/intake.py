"""Where a slide comes from: a path under a configured slide root, an upload
streamed to disk with a size limit, or a DICOM WSI series (pulled from the PACS or
received by C-STORE) in a folder of its own, removed with the job like an upload."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from aidx.inference.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from aidx.inference.files import make_folders, open_private

# Single-file formats OpenSlide reads; an upload keeps its extension (some readers
# look at it). Multi-file formats (MRXS, VMS) can only be given as paths.
UPLOAD_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".scn", ".svslide", ".bif"}
_SAFE_NAME = re.compile(r"^[\w .()+-]{1,200}$")
SERIES_MARKER = ".aidx-series"  # a folder holding one DICOM WSI series, aidx's own copy


def resolve_slide_path(given: str, roots: list[Path]) -> Path:
    """The real path of `given` if it lies under a slide root once `..` and links
    are resolved; a relative path is taken against each root in turn, and the first
    root that holds it wins."""
    if not roots:
        raise Forbidden(
            "no slide roots are configured (AIDX_WSI_SLIDE_ROOTS); upload the slide instead",
            code="slide_roots_not_configured",
        )
    if not given or "\x00" in given:
        raise BadRequest("slide_path must be a non-empty path", code="invalid_slide_path")
    real_roots = [root.resolve() for root in roots]
    path = Path(given)
    candidates = [path] if path.is_absolute() else [root / path for root in real_roots]
    inside = [
        real
        for real in (candidate.resolve() for candidate in candidates)  # links, `..` gone
        if any(real.is_relative_to(root) for root in real_roots)
    ]
    for real in inside:
        if real.is_file():
            return real
    if inside:
        raise NotFound("no slide at that path", code="slide_not_found")
    raise Forbidden("the path lies outside the configured slide roots", code="slide_path_forbidden")


def upload_suffix(filename: str | None) -> str:
    if filename is None:
        return ".tiff"
    name = Path(filename).name
    suffix = Path(name).suffix.lower()
    if not _SAFE_NAME.match(name) or suffix not in UPLOAD_SUFFIXES:
        raise BadRequest(
            f"the upload's filename must end in one of {', '.join(sorted(UPLOAD_SUFFIXES))}",
            code="invalid_filename",
        )
    return suffix


# Received chunks (about 64 KiB each) are gathered and written in one go by a worker
# thread: a disk that stalls (a full page cache, a network volume) stalls the upload,
# never the event loop and every other request with it.
WRITE_BYTES = 4 << 20


async def save_upload(
    chunks: AsyncIterator[bytes], target: Path, limit_bytes: int, declared: int | None = None
) -> int:
    """Stream `chunks` to `target` (written under a temporary name, then renamed);
    past `limit_bytes` the partial file is removed and 413 raised. Every disk call
    runs in a worker thread."""
    if declared is not None and declared > limit_bytes:
        raise _too_large(limit_bytes)
    partial = target.with_name(f".{target.name}.part")
    try:
        fh = await asyncio.to_thread(open_private, partial, "wb")
        try:
            total = await _write_chunks(chunks, fh, limit_bytes)
        finally:
            await asyncio.to_thread(fh.close)
        if total == 0:
            raise BadRequest("the upload is empty", code="empty_upload")
        await asyncio.to_thread(os.replace, partial, target)
    finally:
        await asyncio.to_thread(partial.unlink, missing_ok=True)
    return total


async def _write_chunks(chunks: AsyncIterator[bytes], fh: IO[bytes], limit_bytes: int) -> int:
    """Write `chunks` to `fh` in batches of about `WRITE_BYTES`; the bytes written."""
    batch: list[bytes] = []
    batch_bytes = total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit_bytes:
            raise _too_large(limit_bytes)
        batch.append(chunk)
        batch_bytes += len(chunk)
        if batch_bytes >= WRITE_BYTES:
            await asyncio.to_thread(fh.writelines, batch)
            batch, batch_bytes = [], 0
    if batch:
        await asyncio.to_thread(fh.writelines, batch)
    return total


def _too_large(limit_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the slide exceeds the upload limit of {limit_bytes} bytes", limit_bytes=limit_bytes
    )


def series_folder(var_dir: Path) -> Path:
    """A new, private folder for one DICOM WSI series (its instances side by side, as
    OpenSlide wants them), marked as aidx's to remove once its job has ended."""
    folder = var_dir / "wsi" / "dicom" / str(uuid.uuid4())
    make_folders(folder)
    open_private(folder / SERIES_MARKER, "wb").close()
    return folder


def release_slide(path: Path) -> None:
    """Remove an uploaded slide, or the whole series folder a DICOM WSI lies in."""
    if (path.parent / SERIES_MARKER).is_file():
        shutil.rmtree(path.parent, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
