"""Reliability: hostile input files and hostile response bodies.

Extends tests/test_input.py (which checks that arbitrary bytes never raise): here every
error must also be *located* (``file:line[: field 'x']: reason``), hostile payloads (huge
lines, deep nesting, NUL, path tricks in ids) go through a real Batch that must never
write outside OUTDIR, and the response decoder only ever raises ``DecodeError``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from _reliability import KEY, scan_out_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cometgen
from cometgen import _wire as wire
from cometgen._bulk._input import iter_input
from cometgen._bulk._job import Job, check_id
from cometgen._exceptions import DecodeError, InputError
from cometgen._result import GenerateResult
from cometgen.testing import MockServer

FLASH = "gemini-2.5-flash-image"
HOSTILE_IDS = [
    "../escape", "../../etc/passwd", "/abs/path", "/", "C:\\Windows\\win.ini", "a/../../b",
    "..", ".", ".hidden", "CON", "nul.txt", "COM1", "lpt9.png", "ＣＯＮ", "con .txt", " ",
    "a" * 200, "é" * 150, "x/y/z", "\\\\server\\share", "~/home", "$HOME", "*?<>|\":",
    "manifest.jsonl", "metadata.jsonl", ".manifest.jsonl.0123456789ab.tmp", "😀" * 60,
    "CamelCase", "camelcase", "dup", "dup",
]
_workdir = tempfile.TemporaryDirectory()


def _entries(name: str, data: bytes) -> list[Job | InputError] | InputError:
    path = Path(_workdir.name) / name
    path.write_bytes(data)
    try:
        return list(iter_input(path, default_model=FLASH))
    except InputError as exc:  # a file-level problem (CSV header): raised before reading
        return exc


def _assert_located(name: str, data: bytes) -> None:
    result = _entries(name, data)
    file = str(Path(_workdir.name) / name)
    if isinstance(result, InputError):
        assert result.file == file and str(result).startswith(f"{file}")
        return
    for entry in result:
        if isinstance(entry, InputError):
            assert entry.file == file and entry.line is not None and entry.line >= 1
            prefix = f"{file}:{entry.line}: "
            assert str(entry).startswith(prefix), str(entry)
            if entry.field:
                assert str(entry).startswith(f"{prefix}field {entry.field!r}: ")
        else:
            assert isinstance(entry, Job) and entry.line is not None
            assert entry.id is None or check_id(entry.id) is None
            assert "\x00" not in entry.prompt


_hostile_line = st.sampled_from([
    b'{"prompt": "p", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"[" * 200_000,
    b'{"prompt": "' + b"x" * (1 << 20) + b'"}',
    b'{"prompt": "a\\u0000b"}',
    b'{"prompt": "p", "id": "../../x"}',
    b'{"prompt": "p", "id": 12345678901234567890123}',
    b'{"prompt": 5, "id": [1]}',
    b'{"prompt": "p", "n": 1e309}',
    b'{"prompt": "p", "seed": 99999999999}',
    b'{"prompt": "p", "images": ["/etc/passwd", "../x.png"]}',
    b'{"prompt": "p", "id": "dup"}',
    b"\xff\xfe\x00p\x00",
    b"prompt,id\n\"p\",\"../a\"",
    b'"unterminated',
    b"\x00" * 100,
])
_files = st.lists(_hostile_line | st.binary(max_size=80), max_size=8).map(b"\n".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.sampled_from([".jsonl", ".csv", ".txt"]), data=_files)
def test_every_bad_line_is_located(suffix: str, data: bytes) -> None:
    _assert_located("hostile" + suffix, data)
    if suffix == ".csv":
        _assert_located("hostile.csv", b"prompt,id,n,metadata\n" + data)


def test_huge_and_deep_lines_become_errors_and_reading_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join([
        b"[" * 200_000,  # deeper than any parser allows
        b'{"prompt": "p", "metadata": ' + b"{\"a\":" * 3000 + b"1" + b"}" * 3000 + b"}",
        b'{"prompt": "' + b"y" * (2 << 20) + b'"}',  # longer than MAX_LINE_BYTES
        b'{"prompt": "fine", "id": "last"}',
    ]) + b"\n")
    entries = list(iter_input(src, default_model=FLASH))
    assert [type(e).__name__ for e in entries] == ["InputError"] * 3 + ["Job"]
    assert [e.line for e in entries] == [1, 2, 3, 4]


# --------------------------------------------------------------------------- decoder

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["candidates", "content", "parts", "inlineData", "data", "mimeType",
                         "text", "finishReason", "promptFeedback", "blockReason",
                         "usageMetadata", "promptTokenCount", "thought", "x"]) | st.text(
                             max_size=6), inner, max_size=4),
    max_leaves=20,
)


def _decode_or_decode_error(body: bytes) -> None:
    try:
        response = wire.decode_response(body)
    except DecodeError as exc:
        assert str(exc)
        return
    result = GenerateResult.from_response(response, model=FLASH)  # must not raise either
    assert isinstance(result.images, list)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | _json.map(lambda v: json.dumps(v).encode()))
def test_decoder_raises_only_decode_error(body: bytes) -> None:
    _decode_or_decode_error(body)
    info = wire.parse_error_body(body, status_code=500, reason_phrase="x")  # never raises
    assert isinstance(info.message, str)


@pytest.mark.parametrize("body", [
    b'{"x": ' * 100_000,
    b'{"candidates": [{"content": {"parts": [{"inlineData": {"data": "QQ"}, "x": '
    + b"[" * 100_000 + b"}]}}]}",
    b'{"candidates": [{"content": {"parts": [{"inlineData": {"data": "%%%"}}]}}]}',
    b'{"candidates": [{"content": {"parts": [{"inlineData": {"data": 5}}]}}]}',
    b'{"candidates": "x"}', b"\xef\xbb\xbf{}", b"\x00", b"",
])
def test_hostile_bodies_are_decode_errors(body: bytes) -> None:
    with pytest.raises(DecodeError):
        wire.decode_response(body)
    try:  # the mock's request parser: a request may ignore these fields, never crash
        wire.decode_request(body)
    except DecodeError:
        pass


# --------------------------------------------------------------------------- through a Batch


def _tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root)
            for d, _, files in os.walk(root) for f in files}


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(st.lists(st.text(min_size=1, max_size=40).filter(lambda s: check_id(s) is None),
                max_size=25))
def test_hostile_ids_never_write_outside_outdir(drawn: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "a" / "b" / "out"
        (root / "a").mkdir()
        (root / "a" / "sibling.txt").write_text("keep")
        jobs: list[Job | InputError] = [Job(id=i, prompt=f"p {n}")
                                        for n, i in enumerate(HOSTILE_IDS + drawn)]

        async def main() -> None:
            async with MockServer() as server:
                client = cometgen.AsyncClient(api_key=KEY, base_url=server.url)
                async with client, cometgen.Batch(client, out_dir=out, concurrency=8) as b:
                    await b.run_all(jobs)

        anyio.run(main, backend="asyncio")
        outside = {p for p in _tree(root) if not p.startswith(os.path.join("a", "b", "out"))}
        assert outside == {os.path.join("a", "sibling.txt")}
        top = os.path.join("a", "b", "out")
        image_dir = re.compile(r"images/h[0-9a-f]{2}/[0-9a-f]{2}")  # Python jobs: by key
        assert all(os.path.dirname(p) == top
                   or image_dir.fullmatch(os.path.relpath(os.path.dirname(p), top))
                   for p in _tree(root) if p not in outside)
        records: dict[str, Any] = {}
        # Split on "\n" only: str.splitlines() also breaks at U+0085 / U+2028, which JSON
        # strings (an id here) may hold raw.
        for line in filter(None, (out / "manifest.jsonl").read_text().split("\n")):
            rec = json.loads(line)
            records[rec["key"]] = rec
        assert set(records) == set(HOSTILE_IDS + drawn)
        names = [f["path"] for r in records.values() for f in r["files"]]
        assert len(names) == len(set(names)) == len(records)  # distinct ids, distinct files
        base = [n.removeprefix("images/").split("/", 2)[2] for n in names]  # images/ab/cd/
        assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in base)
        assert {"manifest.jsonl", "metadata.jsonl"} | set(names) == {
            p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
        assert scan_out_dir(out)[1] == []
