"""Cut the long base64 strings out of a large ``generateContent`` body before msgspec sees it.

A Gemini 3 image answer is ~4 MB of JSON, over 99 % of it two strings: the image's
``inlineData.data`` and a ``thoughtSignature``. msgspec scans every byte of them (~2 GB/s,
slower still on a body fresh from the socket) and decodes base64 with a scalar loop: ~3-4 ms
per answer, the largest CPU cost of a call. Here the strings are found with ``bytes.find``
(memchr speed), the image is decoded with pybase64 (SIMD) and the signature becomes a
zero-copy view of the body; msgspec then decodes a skeleton of a few KB in which each cut
string is replaced by a placeholder.

The walk visits the body's strings quote to quote, so it tokenizes exactly as a JSON parser
would for a valid body. For an invalid one the skeleton is invalid too and msgspec's error is
reported, with one exception: raw control characters inside a cut ``thoughtSignature`` are not
noticed (the token is kept verbatim, as an opaque value).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from typing import Final

import msgspec
import pybase64

__all__ = ["MIN_BODY", "PLACEHOLDER_SIZE", "PLACEHOLDER_TOKEN_SIZE", "CutBody", "cut_long_strings"]

#: Bodies shorter than this go straight to msgspec: the walk would not pay for itself.
MIN_BODY: Final = 256 * 1024
#: Strings shorter than this stay in the skeleton.
_MIN_SPAN: Final = 16 * 1024
#: More strings than this before the end: a text-heavy body, where msgspec alone is faster.
_MAX_STRINGS: Final = 4096

#: A placeholder is the base64 of this many bytes: 8 random per body, then a 4-byte index.
PLACEHOLDER_SIZE: Final = 12
#: ...and as a JSON string token: 16 base64 characters in quotes.
PLACEHOLDER_TOKEN_SIZE: Final = 18

_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_WHITESPACE: Final = b" \t\r\n"
_DATA: Final = b"data"
_SIGNATURE: Final = b"thoughtSignature"


@dataclass(slots=True)
class CutBody:
    """A skeleton body and what was cut out of it, by placeholder."""

    skeleton: bytes
    #: placeholder bytes (as msgspec decodes the placeholder's base64) -> decoded image bytes
    data: dict[bytes, bytes] = field(default_factory=dict)
    #: placeholder JSON token (quotes included) -> the original token, zero-copy
    signatures: dict[bytes, msgspec.Raw] = field(default_factory=dict)


def _string_end(body: bytes | bytearray, start: int) -> int:
    """Index of the quote closing the string whose first character is at ``start``; -1 if none."""
    end = body.find(b'"', start)
    while end > 0 and body[end - 1] == _BACKSLASH:
        run = 1
        while body[end - 1 - run] == _BACKSLASH:
            run += 1
        if run % 2 == 0:  # the backslashes escape each other, not the quote
            break
        end = body.find(b'"', end + 1)
    return end


def _skip_whitespace(body: bytes | bytearray, pos: int) -> int:
    size = len(body)
    while pos < size and body[pos] in _WHITESPACE:
        pos += 1
    return pos


def cut_long_strings(body: bytes | bytearray) -> CutBody | None:
    """Cut long ``data`` / ``thoughtSignature`` string values out of ``body``.

    Returns ``None`` when nothing was cut (or the body is not worth it): decode it whole.
    A ``data`` value that is not standard padded base64 is left in place, so msgspec and
    its tolerant fallback judge it as before.
    """
    token = os.urandom(8)
    cut = CutBody(skeleton=b"")
    pieces: list[bytes | bytearray] = []
    kept = 0  # body[kept:] is not yet in pieces
    pos = 0
    strings = 0
    while True:
        start = body.find(b'"', pos)
        if start < 0:
            break
        end = _string_end(body, start + 1)
        if end < 0:
            return None  # unterminated string: let msgspec report it
        strings += 1
        if strings > _MAX_STRINGS:
            return None
        pos = end + 1
        name = body[start + 1 : end]
        if name != _DATA and name != _SIGNATURE:
            continue
        colon = _skip_whitespace(body, pos)
        if colon >= len(body) or body[colon] != 0x3A:
            continue  # a value that happens to read "data", not a key
        value = _skip_whitespace(body, colon + 1)
        if value >= len(body) or body[value] != _QUOTE:
            continue  # not a string value; the walk goes on from after the key
        value_end = _string_end(body, value + 1)
        if value_end < 0:
            return None
        pos = value_end + 1
        strings += 1
        if value_end - value - 1 < _MIN_SPAN:
            continue
        placeholder = base64.b64encode(token + len(pieces).to_bytes(4, "big"))
        if name == _DATA:
            try:
                decoded = pybase64.b64decode(
                    memoryview(body)[value + 1 : value_end], validate=True
                )
            except (binascii.Error, ValueError):
                continue
            cut.data[base64.b64decode(placeholder)] = decoded
        else:
            token_bytes = b'"' + placeholder + b'"'
            cut.signatures[token_bytes] = msgspec.Raw(memoryview(body)[value : value_end + 1])
        pieces.append(body[kept : value + 1])
        pieces.append(placeholder)
        kept = value_end
    if not pieces:
        return None
    pieces.append(body[kept:])
    cut.skeleton = b"".join(pieces)
    return cut
