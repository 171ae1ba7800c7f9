"""``cometgen.Image``: image bytes with their MIME type, from a response or for a request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import anyio
import anyio.lowlevel
import msgspec

from ._config import SAVE_THREADS
from ._exceptions import ConfigError
from ._files import SMALL_WRITE, extension_for, write_atomic, write_atomic_sync
from ._wire import signature_text

# Per event loop: a limiter belongs to the loop it was made in.
_SAVE_LIMITER: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("save_limiter")


def _save_limiter() -> anyio.CapacityLimiter:
    try:
        return _SAVE_LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(SAVE_THREADS)
        _SAVE_LIMITER.set(limiter)
        return limiter


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

    __slots__ = ("_signature", "data", "mime_type")

    def __init__(
        self,
        data: bytes,
        mime_type: str | None = None,
        *,
        thought_signature: str | msgspec.Raw | None = None,
    ) -> None:
        mime = mime_type or sniff_mime_type(data)
        if mime is None:
            raise ConfigError("cannot tell the image type from its bytes; pass mime_type=")
        self.data = data
        self.mime_type = mime
        # Kept raw (zero-copy) until asked for: it can be ~3 MB and is rarely read.
        self._signature = thought_signature

    @property
    def thought_signature(self) -> str | None:
        """The signature the model attached to this part (base64 text), if any."""
        return signature_text(self._signature)

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
        survives a power loss once ``save`` returns; on Linux an image of 256 KiB or more
        then skips the page cache (``O_DIRECT``). ``durable=False`` skips the fsyncs and
        writes through the page cache. Returns the final path.
        """
        target = Path(path)
        if len(self.data) <= SMALL_WRITE:
            # One worker-thread call for the directory check and the write: a thread hop
            # costs about as much CPU as the fsyncs. Not abandoned on cancel, so it ends
            # with the file in place or the temp file removed.
            return await anyio.to_thread.run_sync(
                self._save_sync, target, durable, limiter=_save_limiter()
            )
        target = await anyio.to_thread.run_sync(self._file_for, target)
        await write_atomic(target, self.data, fsync=durable, digest=False)
        return target

    def _file_for(self, target: Path) -> Path:
        """``target``, or ``target/image.<ext>`` when it is a directory (blocking)."""
        return target / f"image.{self.extension}" if target.is_dir() else target

    def _save_sync(self, target: Path, durable: bool) -> Path:
        target = self._file_for(target)
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
