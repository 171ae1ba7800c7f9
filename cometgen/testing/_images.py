"""Tiny, dependency-free PNG and JPEG writers for the mock's images.

Images are a vertical gradient: flat per row (PNG) or per 8-pixel block row (JPEG, DC-only
baseline), so generation stays cheap even at real 4K sizes. The gradient's two colours come
from the prompt, seed and size (``palette``): a dataset made on the mock is not a thousand
identical images, and the same request always gives the same image. Results are cached; large
or padded images use one of ``LARGE_LOOKS`` palettes so the cache keeps them cheap.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from functools import lru_cache

#: Output pixels at 1K, by aspect ratio (Gemini 3.x image models).
DIMS_3X: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "2:3": (848, 1264), "3:2": (1264, 848), "3:4": (896, 1200),
    "4:3": (1200, 896), "4:5": (928, 1152), "5:4": (1152, 928), "9:16": (768, 1376),
    "16:9": (1376, 768), "21:9": (1584, 672),
    "1:4": (512, 2048), "4:1": (2048, 512), "1:8": (384, 3072), "8:1": (3072, 384),
}
#: Output pixels by aspect ratio for gemini-2.5-flash-image (always 1K).
DIMS_25: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184),
    "4:3": (1184, 864), "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344),
    "16:9": (1344, 768), "21:9": (1536, 672),
}
SIZE_FACTOR: dict[str, float] = {"512": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0}
#: Default downscale: 1K at 1:1 becomes 64x64.
DEFAULT_SCALE = 1 / 16

_TOP = (70, 130, 180)
_BOTTOM = (46, 139, 87)

Palette = tuple[tuple[int, int, int], tuple[int, int, int]]
DEFAULT_PALETTE: Palette = (_TOP, _BOTTOM)
#: Distinct palettes for large or padded images.
LARGE_LOOKS = 64


def palette(prompt: str, seed: int | None, image_size: str | None, *, large: bool) -> Palette:
    """The gradient's top and bottom colours for a request: deterministic, prompt-dependent."""
    digest = hashlib.sha256(f"{prompt}\0{seed}\0{image_size}".encode()).digest()
    if large:
        digest = hashlib.sha256(b"look" + bytes([digest[0] % LARGE_LOOKS])).digest()
    top = (digest[0], digest[1], digest[2])
    bottom = (digest[3], digest[4], digest[5])
    return top, bottom


def image_dimensions(
    family: str, aspect_ratio: str | None, image_size: str | None, scale: float
) -> tuple[int, int]:
    """(width, height) of the image the mock returns, after ``scale``."""
    table = DIMS_25 if family == "gemini-2.5-flash-image" else DIMS_3X
    w, h = table.get(aspect_ratio or "1:1", (1024, 1024))
    f = SIZE_FACTOR.get(image_size or "1K", 1.0) * scale
    return max(1, round(w * f)), max(1, round(h * f))


def _gradient(i: int, n: int, look: Palette = DEFAULT_PALETTE) -> tuple[int, int, int]:
    t = i / max(1, n - 1)
    r, g, b = (round(a + (z - a) * t) for a, z in zip(look[0], look[1], strict=True))
    return r, g, b


# ---------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def make_png(
    width: int, height: int, pad_to: int | None = None, look: Palette = DEFAULT_PALETTE
) -> bytes:
    """An RGB PNG with a vertical gradient, padded with a private chunk to ~``pad_to`` bytes."""
    raw = b"".join(b"\x00" + bytes(_gradient(y, height, look)) * width for y in range(height))
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    )
    body = _png_chunk(b"IDAT", zlib.compress(raw, 6))
    tail = _png_chunk(b"IEND", b"")
    size = len(head) + len(body) + len(tail)
    pad = b""
    if pad_to is not None and pad_to - size > 12:
        # "cgPd": ancillary, private, safe-to-copy; decoders skip it.
        pad = _png_chunk(b"cgPd", bytes(pad_to - size - 12))
    return head + body + pad + tail


# ---------------------------------------------------------------- JPEG

# Standard (ITU T.81 Annex K) Huffman tables, as DHT payloads: class/id, 16 counts, values.
_DHT_PAYLOADS = (
    "0000010501010101010100000000000000000102030405060708090a0b",
    "10" "0002010303020403050504040000017d01020300041105122131410613516107227114"
    "328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a43"
    "4445464748494a535455565758595a636465666768696a737475767778797a838485868788898a"
    "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4"
    "d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa",
    "0100030101010101010101010000000000000102030405060708090a0b",
    "11" "00020102040403040705040400010277000102031104052131061241510761711322328108"
    "144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a35363738393a4344"
    "45464748494a535455565758595a636465666768696a737475767778797a828384858687888"
    "98a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2"
    "d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa",
)
_DC_Q = 8  # DC quantiser: the DC coefficient 8*(mean-128) becomes mean-128


def _huffman_codes(payload: bytes) -> dict[int, str]:
    counts, values = payload[1:17], payload[17:]
    codes: dict[int, str] = {}
    code = k = 0
    for length, count in enumerate(counts, start=1):
        for _ in range(count):
            codes[values[k]] = format(code, f"0{length}b")
            code += 1
            k += 1
        code <<= 1
    return codes


_DHT = tuple(bytes.fromhex(p) for p in _DHT_PAYLOADS)
_DC_LUM, _AC_LUM, _DC_CHR, _AC_CHR = (_huffman_codes(p) for p in _DHT)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _dc_bits(diff: int, table: dict[int, str]) -> str:
    if diff == 0:
        return table[0]
    cat = abs(diff).bit_length()
    extra = diff if diff > 0 else diff + (1 << cat) - 1
    return table[cat] + format(extra, f"0{cat}b")


def _ycbcr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return tuple(max(-128, min(127, round(v - 128))) for v in (y, cb, cr))  # type: ignore[return-value]


def make_jpeg(
    width: int, height: int, pad_to: int | None = None, look: Palette = DEFAULT_PALETTE
) -> bytes:
    """A baseline 4:4:4 JPEG, flat per 8-pixel block row, padded with COM segments."""
    cols, rows = -(-width // 8), -(-height // 8)
    eob = (_AC_LUM[0], _AC_CHR[0], _AC_CHR[0])
    dcs = (_DC_LUM, _DC_CHR, _DC_CHR)
    same = "".join(dcs[c][0] + eob[c] for c in range(3))  # an MCU equal to its left neighbour
    pred = [0, 0, 0]
    parts: list[str] = []
    for r in range(rows):
        comp = _ycbcr(_gradient(r, rows, look))
        first = "".join(_dc_bits(comp[c] - pred[c], dcs[c]) + eob[c] for c in range(3))
        pred = list(comp)
        parts.append(first + same * (cols - 1))
    bits = "".join(parts)
    bits += "1" * (-len(bits) % 8)
    scan = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")

    head = b"\xff\xd8" + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    head += _segment(0xDB, bytes([0, _DC_Q] + [16] * 63) + bytes([1, _DC_Q] + [17] * 63))
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x11, 0, 2, 0x11, 1, 3, 0x11, 1])
    head += _segment(0xC0, sof)
    head += b"".join(_segment(0xC4, p) for p in _DHT)
    sos = _segment(0xDA, bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0]))
    tail = b"\xff\xd9"
    size = len(head) + len(sos) + len(scan) + len(tail)
    pad = b""
    if pad_to is not None:
        missing = pad_to - size
        chunks: list[bytes] = []
        while missing > 4:
            n = min(missing - 4, 65533)
            chunks.append(_segment(0xFE, b"\x20" * n))
            missing -= n + 4
        pad = b"".join(chunks)
    return head + pad + sos + scan + tail


@lru_cache(maxsize=256)
def image_b64(
    mime_type: str, width: int, height: int, pad_to: int | None,
    look: Palette = DEFAULT_PALETTE,
) -> str:
    """Standard base64 of a cached generated image."""
    data = make_jpeg(width, height, pad_to, look) if mime_type == "image/jpeg" else make_png(
        width, height, pad_to, look
    )
    return base64.b64encode(data).decode("ascii")
