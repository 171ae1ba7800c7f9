"""``cometgen.Image``: image bytes with their MIME type, from a response or for a request."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Final

import anyio

from ._exceptions import ConfigError
from ._files import extension_for, in_write_thread, write_atomic_sync

_HEIC_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx",
                                 b"hevm", b"hevs"})
_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1", b"heif"})


#: What the sniffer recognises: the image types Gemini accepts as input (no GIF, no AVIF).
IMAGE_TYPES_TEXT: Final = "PNG, JPEG, WEBP, HEIC or HEIF"


def sniff_mime_type(data: bytes) -> str | None:
    """The MIME type of image bytes from their magic number, or None unless it is one of the
    types Gemini accepts (``IMAGE_TYPES_TEXT``). The one sniffer: ``Image`` and the input
    readers both use it."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and len(data) >= 12:
        box = min(int.from_bytes(data[:4], "big"), len(data))
        brands = {data[8:12]} | {data[i:i + 4] for i in range(16, box - 3, 4)}
        if data[8:12] in (b"avif", b"avis"):
            return None
        if brands & _HEIC_BRANDS:
            return "image/heic"
        if brands & _HEIF_BRANDS:
            return "image/heif"
    return None


class Image:
    """An image: ``data`` (bytes), ``mime_type``, ``extension``; ``await image.save(path)``."""

    __slots__ = ("data", "mime_type", "thought_signature")

    def __init__(
        self,
        data: bytes,
        mime_type: str | None = None,
        *,
        thought_signature: str | None = None,
    ) -> None:
        mime = mime_type or sniff_mime_type(data)
        if mime is None:
            raise ConfigError("cannot tell the image type from its bytes; pass mime_type=")
        self.data = data
        self.mime_type = mime
        #: The signature the model attached to this part (base64 text), if any.
        self.thought_signature = thought_signature or None

    @classmethod
    async def from_file(cls, path: str | os.PathLike[str]) -> Image:
        """Read an image file without blocking the event loop."""
        try:
            data = await anyio.Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read image {os.fspath(path)!r}: {exc.strerror}") from exc
        mime = sniff_mime_type(data)
        if mime is None:
            raise ConfigError(f"{os.fspath(path)!r} is not a {IMAGE_TYPES_TEXT} image")
        return cls(data, mime)

    @property
    def extension(self) -> str:
        """File extension without the dot, from the MIME type (``jpg``, ``png``...)."""
        return extension_for(self.mime_type)

    async def save(self, path: str | os.PathLike[str], *, durable: bool = True) -> Path:
        """Write atomically (temp file + rename); a directory gets ``image.<ext>``.

        Never a half-written file under the final name, even if the process dies mid-write.
        ``durable=True`` (the default) also fsyncs the file and its directory, so the image
        survives a power loss once ``save`` returns. Returns the final path.
        """
        # One worker-thread call for the directory check and the write.
        return await in_write_thread(functools.partial(self._save_sync, Path(path), durable))

    def _save_sync(self, target: Path, durable: bool) -> Path:
        if target.is_dir():
            target = target / f"image.{self.extension}"
        write_atomic_sync(target, self.data, fsync=durable, digest=False)
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
