"""Person names copied from a source instance into the objects aidx writes."""

from __future__ import annotations

import pydicom

PERSON_NAMES = ("PatientName", "ReferringPhysicianName")


def with_unambiguous_names(source: pydicom.Dataset) -> pydicom.Dataset:
    """`source`'s elements, its single-component person names given the trailing
    caret DICOM allows ("ward" and "ward^" are the same name): highdicom warns about
    them otherwise, with the name in the message, and warnings reach the logs (PHI)."""
    ref = pydicom.Dataset(source)  # a new element map: the source is left as it is
    ref.file_meta = getattr(source, "file_meta", pydicom.dataset.FileMetaDataset())
    for keyword in PERSON_NAMES:
        name = str(source.get(keyword) or "")
        if name and not any(mark in name for mark in "^="):
            setattr(ref, keyword, name + "^")
    return ref
