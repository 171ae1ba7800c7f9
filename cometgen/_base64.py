"""Tolerant base64 decoding for protobuf JSON ``bytes`` fields.

Protobuf's JSON mapping accepts standard or URL-safe base64, with or without padding, and the
official SDK sends URL-safe. msgspec's C decoder only takes standard padded base64, so this is the
fallback used when it refuses a value.
"""

from __future__ import annotations

import binascii

__all__ = ["b64decode_tolerant"]

_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")
_WHITESPACE = b" \t\r\n"


def b64decode_tolerant(value: str | bytes) -> bytes:
    """Decode standard or URL-safe base64, padded or not; raise ``ValueError`` if invalid."""
    try:
        raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
    except UnicodeEncodeError:
        raise ValueError("invalid base64: non-ASCII character") from None
    if any(c in raw for c in _WHITESPACE):
        raw = raw.translate(None, _WHITESPACE)
    raw = raw.translate(_URLSAFE_TO_STD).rstrip(b"=")
    remainder = len(raw) % 4
    if remainder == 1:
        raise ValueError("invalid base64: impossible length")
    if remainder:
        raw += b"=" * (4 - remainder)
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None
