"""The production key policy, stated once.

A key is at least `MIN_KEY_LENGTH` characters with at least `MIN_BITS_PER_CHAR` bits of
Shannon entropy per character, measured on the key's own character frequencies (what
`secrets.token_urlsafe(32)` gives has about 5; a random 32-digit hex key about 3.5; a
word, a repeated pattern or a short key fails). Only keys' SHA-256 are configured, so
the policy is checked where a key is seen in full: when it is presented (auth.py) and
when `aidx keys new` makes one. At start-up the hashes are checked against well-known
placeholders and against each other (two clients never share a key).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

MIN_KEY_LENGTH = 32
MIN_BITS_PER_CHAR = 3.0
POLICY = (
    f"at least {MIN_KEY_LENGTH} characters and {MIN_BITS_PER_CHAR:g} bits of entropy per "
    "character; `aidx keys new` makes one"
)

# Placeholders pasted from docs and examples: refused at start-up by their hash.
_PLACEHOLDERS = ("changeme", "change-me", "secret", "password", "aidx", "test", "dev", "admin")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _variants(word: str) -> set[str]:
    return {word, word.capitalize(), word.upper()}


WELL_KNOWN_HASHES = frozenset(
    hash_key(v) for word in ("", "x", *_PLACEHOLDERS) for v in _variants(word)
)


def bits_per_char(key: str) -> float:
    """Shannon entropy of the key's characters, in bits per character."""
    if not key:
        return 0.0
    counts = Counter(key).values()
    return -sum(n / len(key) * math.log2(n / len(key)) for n in counts)


def weakness(key: str) -> str | None:
    """Why `key` fails the production policy (a reason that holds no part of the key),
    or None when it passes."""
    if len(key) < MIN_KEY_LENGTH:
        return f"shorter than {MIN_KEY_LENGTH} characters"
    if bits_per_char(key) < MIN_BITS_PER_CHAR:
        return f"less than {MIN_BITS_PER_CHAR:g} bits of entropy per character"
    return None
