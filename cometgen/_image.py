"""``cometgen.Image``: image bytes with their MIME type, from a response or for a request."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from ._exceptions import ConfigError

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
)
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/gif": "gif",
}


def sniff_mime_type(data: bytes) -> str | None:
    """The image MIME type from the first bytes, or None when not recognised."""
    for magic, offset, mime in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx"):
            return "image/heic"
        if brand in (b"mif1", b"msf1", b"heif"):
            return "image/heif"
    return None


class Image:
    """An image: ``data`` (bytes), ``mime_type``, ``extension``; ``await image.save(path)``."""

    __slots__ = ("data", "mime_type", "thought_signature")

    def __init__(
        self, data: bytes, mime_type: str | None = None, *, thought_signature: str | None = None
    ) -> None:
        mime = mime_type or sniff_mime_type(data)
        if mime is None:
            raise ConfigError("cannot tell the image type from its bytes; pass mime_type=")
        self.data = data
        self.mime_type = mime
        #: The signature the model attached to this part (base64 text), if any.
        self.thought_signature = thought_signature

    @classmethod
    async def from_file(cls, path: str | os.PathLike[str]) -> Image:
        """Read an image file without blocking the event loop."""
        try:
            data = await anyio.Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read image {os.fspath(path)!r}: {exc.strerror}") from exc
        mime = sniff_mime_type(data)
        if mime is None:
            raise ConfigError(f"{os.fspath(path)!r} is not a PNG, JPEG, WEBP, HEIC or GIF image")
        return cls(data, mime)

    @property
    def extension(self) -> str:
        """File extension without the dot, from the MIME type (``jpg``, ``png``...)."""
        return _EXTENSIONS.get(self.mime_type, "bin")

    async def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + fsync + rename). A directory gets ``image.<ext>``.

        Returns the final path.
        """
        from ._files import write_atomic

        target = Path(path)
        if await anyio.Path(target).is_dir():
            target = target / f"image.{self.extension}"
        await write_atomic(target, self.data)
        return target

    def __repr__(self) -> str:
        return f"Image(mime_type={self.mime_type!r}, bytes={len(self.data)})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Image)
            and other.mime_type == self.mime_type
            and other.data == self.data
        )

    __hash__ = None  # type: ignore[assignment]
