"""Deterministic UIDs: the same source instance and model always give the same UIDs,
so a resend is idempotent at the PACS (same SOPInstanceUID -> same object)."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("0b8f7a52-3f0c-4b9e-8a57-2d6c4e1f9a31")


def derived_uid(*parts: str) -> str:
    """A UID under the 2.25 root (ISO/IEC 9834-8 UUID form), at most 64 characters."""
    key = "|".join(parts)
    return f"2.25.{uuid.uuid5(_NAMESPACE, key).int}"
