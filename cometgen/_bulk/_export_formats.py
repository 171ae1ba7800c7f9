"""Shard writers of ``cometgen export``: Parquet (pyarrow) and WebDataset (stdlib tar).

Both take a list of ``Row`` (what the manifest says about one image) and a function that
reads an image's bytes, so a shard's images are read while it is written, never all
kept: Parquet holds one row group (``ROW_GROUP`` images) at a time, a tar one image.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

import msgspec

from .._exceptions import ConfigError

__all__ = [
    "ROW_GROUP",
    "USAGE_FIELDS",
    "Row",
    "hf_features",
    "require_pyarrow",
    "write_parquet",
    "write_tar",
]

#: Images per Parquet row group: small groups keep memory low and suit the Hub's viewer.
ROW_GROUP: Final = 100
USAGE_FIELDS: Final = (
    "prompt_tokens", "output_tokens", "image_tokens", "thought_tokens", "total_tokens",
)
_ARROW_TYPES: Final = {"bool": "bool", "int64": "int64", "float64": "float64",
                       "string": "string", "json": "string"}
_encoder: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Row:
    """One exported sample: its columns (image aside), and where its image is."""

    columns: dict[str, Any]  #: every non-image column, in schema order
    path: str = ""  #: image path relative to OUTDIR ("" in the failures table)
    sample: str = ""  #: WebDataset sample key (no dot, unique)
    size: int = 0  #: image bytes, from the manifest


def require_pyarrow() -> Any:
    """Import pyarrow or say how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigError(
            "Parquet export needs pyarrow: pip install 'cometgen[datasets]'"
        ) from None
    return pyarrow


def _value(dtype: str) -> dict[str, Any]:
    return {"dtype": _ARROW_TYPES[dtype], "_type": "Value"}


def hf_features(columns: dict[str, str], *, image: str | None) -> dict[str, Any]:
    """Hugging Face ``Features`` (as ``Features.to_dict()``) for ``columns`` (name ->
    ``bool``/``int64``/``float64``/``string``/``json``/``usage``), with an ``Image``
    column named ``image`` first when given."""
    out: dict[str, Any] = {}
    if image is not None:
        out[image] = {"_type": "Image"}
    for name, dtype in columns.items():
        if dtype == "usage":
            out[name] = {f: _value("int64") for f in USAGE_FIELDS}
        else:
            out[name] = _value(dtype)
    return out


def _arrow_schema(pa: Any, columns: dict[str, str], image: bool) -> Any:
    fields = []
    if image:
        fields.append(pa.field("image", pa.struct([("bytes", pa.binary()),
                                                   ("path", pa.string())])))
    for name, dtype in columns.items():
        if dtype == "usage":
            fields.append(pa.field(name, pa.struct([(f, pa.int64()) for f in USAGE_FIELDS])))
        else:
            arrow = _ARROW_TYPES[dtype]
            fields.append(pa.field(name, pa.bool_() if arrow == "bool" else getattr(pa, arrow)()))
    features = hf_features(columns, image="image" if image else None)
    # What ``datasets`` reads back to give the column its Image feature without a card.
    meta = {b"huggingface": _encoder.encode({"info": {"features": features}})}
    return pa.schema(fields, metadata=meta)


def write_parquet(
    out: BinaryIO,
    rows: Sequence[Row],
    columns: dict[str, str],
    read: Callable[[str], bytes] | None,
) -> None:
    """Write ``rows`` as one Parquet file to ``out``; ``read`` None: no image column."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    schema = _arrow_schema(pa, columns, read is not None)
    names = list(columns)
    writer = pq.ParquetWriter(out, schema, compression="zstd")
    try:
        for start in range(0, max(len(rows), 1), ROW_GROUP):
            group = rows[start : start + ROW_GROUP]
            arrays = {n: [r.columns[n] for r in group] for n in names}
            if read is not None:
                arrays = {"image": [{"bytes": read(r.path), "path": r.path}
                                    for r in group], **arrays}
            writer.write_table(pa.Table.from_pydict(arrays, schema=schema))
    finally:
        writer.close()


def _member(name: str, size: int) -> tarfile.TarInfo:
    # Fixed owner and time: the same rows give the same bytes.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uname = info.gname = ""
    return info


def write_tar(
    out: BinaryIO,
    rows: Sequence[Row],
    image_ext: str | None,
    read: Callable[[str], bytes] | None,
) -> None:
    """Write ``rows`` as WebDataset samples (``<sample>.<image_ext>`` + ``<sample>.json``,
    the image left out when ``read`` is None) to ``out``."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for row in rows:
            if read is not None and image_ext is not None:
                data = read(row.path)
                tar.addfile(_member(f"{row.sample}.{image_ext}", len(data)), io.BytesIO(data))
            meta = _encoder.encode(row.columns)
            tar.addfile(_member(f"{row.sample}.json", len(meta)), io.BytesIO(meta))
