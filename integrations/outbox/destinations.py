"""Where outbox entries go. A destination delivers one entry or raises:
`TransientDeliveryError` (and any OSError) is retried with backoff,
`PermanentDeliveryError` (the peer refused this object for good) makes it dead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from aidx.inference.files import atomic_write
from aidx.integrations.outbox.store import Entry


class DeliveryError(Exception):
    pass


class TransientDeliveryError(DeliveryError):
    """The peer is down, busy or answered 5xx: try again later."""


class PermanentDeliveryError(DeliveryError):
    """The peer refused the object itself (validation, 4xx): retrying will not help."""


class Destination(Protocol):
    name: str

    def deliver(self, entry: Entry) -> None: ...


_EXTENSIONS = {
    "application/dicom": ".dcm",
    "application/fhir+json": ".json",
    "x-application/hl7-v2+er7": ".hl7",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class FolderSink:
    """The embedded default: each object as a file under `root/<destination>/`,
    written atomically and named by its key (a resend overwrites the same file)."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def path_for(self, entry: Entry) -> Path:
        stem = _UNSAFE.sub("_", entry.object_key)[:180]
        return self.root / entry.destination / f"{stem}{_EXTENSIONS.get(entry.media_type, '.bin')}"

    def deliver(self, entry: Entry) -> None:
        atomic_write(self.path_for(entry), entry.payload)
