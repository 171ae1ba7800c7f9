"""The dataset card (``DEST/README.md``) of an export: YAML front matter that
``datasets.load_dataset(DEST)`` and the Hub's viewer read (``configs``, features).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["card_features", "card_text"]

_encoder: Final = msgspec.json.Encoder()


def card_features(features: dict[str, Any]) -> list[dict[str, Any]]:
    """``Features.to_dict()`` form -> the card's list form (``name`` + ``dtype``/``struct``)."""
    out: list[dict[str, Any]] = []
    for name, feature in features.items():
        kind = feature.get("_type")
        if kind == "Image":
            out.append({"name": name, "dtype": "image"})
        elif kind == "Value":
            out.append({"name": name, "dtype": feature["dtype"]})
        else:  # a struct: a plain dict of sub-features
            out.append({"name": name, "struct": card_features(feature)})
    return out


def _scalar(value: Any) -> str:
    # JSON scalars are valid YAML flow scalars; quoting every string keeps user-supplied
    # column names (``yes``, ``1.0``, ``a: b``) from being read as something else.
    if isinstance(value, list | dict):
        return "[]" if isinstance(value, list) else "{}"
    return _encoder.encode(value).decode()


def _yaml(obj: Any, pad: str) -> list[str]:
    lines: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, dict | list) and value:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml(value, pad + "  "))
            else:
                lines.append(f"{pad}{key}: {_scalar(value)}")
        return lines
    for item in obj:
        if isinstance(item, dict | list) and item:
            sub = _yaml(item, pad + "  ")
            sub[0] = f"{pad}- {sub[0][len(pad) + 2 :]}"
            lines.extend(sub)
        else:
            lines.append(f"{pad}- {_scalar(item)}")
    return lines


def card_text(
    *,
    fmt: str,
    tables: list[tuple[str, str, dict[str, Any]]],
    summary: dict[str, Any],
) -> str:
    """The card: ``tables`` is ``(config name, data_files glob, features)``, the
    first being the default config; ``summary`` is printed as a small table."""
    configs = []
    infos = []
    for i, (name, pattern, features) in enumerate(tables):
        config: dict[str, Any] = {"config_name": name}
        if i == 0:
            config["default"] = True
        config["data_files"] = [{"split": "train", "path": pattern}]
        configs.append(config)
        infos.append({"config_name": name, "features": card_features(features)})
    front = _yaml({"configs": configs, "dataset_info": infos}, "")
    builder = "parquet" if fmt == "parquet" else "webdataset"
    body = [
        "# cometgen export",
        "",
        f"Images generated with [cometgen](https://pypi.org/project/cometgen/), exported as "
        f"{'Parquet' if fmt == 'parquet' else 'WebDataset'} shards.",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("path/to/this/folder", split="train")',
        f'# or: load_dataset("{builder}", data_files="{tables[0][1]}", split="train")',
        "```",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in summary.items()),
        "",
    ]
    return "---\n" + "\n".join(front) + "\n---\n\n" + "\n".join(body)
