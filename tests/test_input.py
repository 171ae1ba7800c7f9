from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cometgen._bulk._input import (
    MAX_LINE_BYTES,
    count_input,
    iter_input,
)
from cometgen._bulk._job import MAX_PROMPT_CHARS, Job
from cometgen._exceptions import InputError
from cometgen._image import sniff_mime_type

FLASH = "gemini-3.1-flash-image-preview"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
HEIF = b"\x00\x00\x00\x14ftypmif1\x00\x00\x00\x00mif1"
AVIF = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def read(path: str | Path, model: str = FLASH) -> list[Job | InputError]:
    return list(iter_input(path, default_model=model))


def messages(entries: list[Job | InputError]) -> list[str]:
    return [str(e) for e in entries if isinstance(e, InputError)]


def jobs(entries: list[Job | InputError]) -> list[Job]:
    return [e for e in entries if isinstance(e, Job)]


def jsonl(*objs: Any) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    (tmp_path / "refs").mkdir()
    write(tmp_path / "refs" / "a.png", PNG)
    write(tmp_path / "refs" / "b.jpg", JPEG)
    write(tmp_path / "refs" / "notes.txt", "not an image")
    return tmp_path / "refs"


# --- JSONL -------------------------------------------------------------------------------


def test_jsonl_reads_every_field(tmp_path: Path, refs: Path) -> None:
    path = write(tmp_path / "in.jsonl", jsonl(
        {"prompt": "a fox", "id": 7, "model": "gemini-3-pro-image-preview",
         "aspect_ratio": "16:9", "image_size": "4K", "images": ["refs/a.png", "refs/b.jpg"],
         "n": 3, "seed": 42, "metadata": {"sku": [1, 2], "ok": True}},
        {"prompt": "plain"},
    ))
    first, second = read(path)
    assert first == Job(
        prompt="a fox", id="7", model="gemini-3-pro-image-preview", aspect_ratio="16:9",
        image_size="4K", images=(str(refs / "a.png"), str(refs / "b.jpg")), n=3, seed=42,
        metadata={"sku": [1, 2], "ok": True}, line=1,
    )
    assert second == Job(prompt="plain", line=2)


def test_jsonl_image_paths_are_relative_to_the_input_file(
    tmp_path: Path, refs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "data"
    sub.mkdir()
    images = ["../refs/a.png", str(refs / "b.jpg")]
    write(sub / "in.jsonl", jsonl({"prompt": "p", "images": images}))
    monkeypatch.chdir(refs)  # the working directory must not matter
    [job] = read(Path("..") / "data" / "in.jsonl")
    assert isinstance(job, Job)
    assert job.images == (str(refs / "a.png"), str(refs / "b.jpg"))
    assert all(os.path.isabs(p) for p in job.images if isinstance(p, str))


def test_jsonl_skips_blank_and_comment_lines_and_counts_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "in.ndjson",
                 b'\xef\xbb\xbf{"prompt": "one"}\n\n   \n# a comment\n  # another\r\n'
                 b'{"prompt": "two"}\r\n{"prompt": "three", "model": null}')
    assert [(j.prompt, j.line) for j in jobs(read(path))] == [("one", 1), ("two", 6),
                                                              ("three", 7)]


def test_jsonl_errors_name_file_line_and_field(tmp_path: Path, refs: Path) -> None:
    path = write(tmp_path / "in.jsonl", jsonl(
        {"promt": "typo"},                                               # 1
        {"id": "x"},                                                      # 2
        {"prompt": 5},                                                    # 3
        {"prompt": "p", "n": "3"},                                        # 4
        {"prompt": "p", "n": 0},                                          # 5
        {"prompt": "p", "seed": 1.5},                                     # 6
        {"prompt": "p", "images": "refs/a.png"},                          # 7
        {"prompt": "p", "images": ["refs/a.png", 3]},                     # 8
        {"prompt": "p", "images": ["refs/missing.png"]},                  # 9
        {"prompt": "p", "images": ["refs"]},                              # 10
        {"prompt": "p", "images": ["refs/notes.txt"]},                    # 11
        {"prompt": "p", "aspect_ratio": "7:3"},                           # 12
        {"prompt": "p", "model": "gemini-2.5-flash-image", "image_size": "2K"},  # 13
        {"prompt": "p", "model": "gemini-2.5-flash-image",
         "images": ["refs/a.png"] * 4},                                   # 14
        {"prompt": "a\u0000b"},                                           # 15
        {"prompt": "x" * (MAX_PROMPT_CHARS + 1)},                         # 16
        {"prompt": "p", "id": "a\u0007b"},                               # 17
        {"prompt": "p", "id": True},                                      # 18
        {"prompt": "   "},                                                # 19
        '{"prompt": "unterminated',                                       # 20
        '["prompt"]',                                                     # 21
        '"just a string"',                                                # 22
        "[" * 5000 + "]" * 5000,                                          # 23
        {"prompt": "ok"},                                                 # 24
        "a red fox on a hill",                                            # 25
    ))
    entries = read(path)
    p, refs_dir = str(path), str(refs)
    assert messages(entries) == [
        f"{p}:1: field 'promt': unknown field (did you mean 'prompt'?)",
        f"{p}:2: field 'prompt': is required",
        f"{p}:3: field 'prompt': expected a string, got integer",
        f"{p}:4: field 'n': expected an integer, got string",
        f"{p}:5: field 'n': must be between 1 and 64, got 0",
        f"{p}:6: field 'seed': expected an integer, got number",
        f"{p}:7: field 'images': expected an array of file paths, got string",
        f"{p}:8: field 'images[1]': expected a file path, got integer",
        f"{p}:9: field 'images[0]': no such file: {refs_dir}/missing.png",
        f"{p}:10: field 'images[0]': not a regular file: {refs_dir}",
        f"{p}:11: field 'images[0]': not a PNG, JPEG, WEBP, HEIC or HEIF image: "
        f"{refs_dir}/notes.txt",
        f"{p}:12: field 'aspect_ratio': '7:3' is not supported by {FLASH} (one of 1:1, 2:3, "
        "3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9, 1:4, 4:1, 1:8, 8:1)",
        f"{p}:13: field 'image_size': gemini-2.5-flash-image does not accept image_size "
        "(always 1K)",
        f"{p}:14: field 'images': 4 reference images, but gemini-2.5-flash-image takes at "
        "most 3",
        f"{p}:15: field 'prompt': contains a NUL character",
        f"{p}:16: field 'prompt': is 100001 characters long (at most 100000)",
        f"{p}:17: field 'id': must not contain control characters",
        f"{p}:18: field 'id': expected a string, got boolean",
        f"{p}:19: field 'prompt': must not be empty",
        f"{p}:20: invalid JSON: Input data was truncated",
        f"{p}:21: expected a JSON object, got array",
        f"{p}:22: expected a JSON object, got string",
        f"{p}:23: invalid JSON: nested too deeply",
        f'{p}:25: not JSON: a JSONL line is one object such as {{"prompt": "a red fox"}} '
        "(plain prompts, one a line, go in a .txt file)",
    ]
    assert [(j.prompt, j.line) for j in jobs(entries)] == [("ok", 24)]
    first = entries[0]
    assert isinstance(first, InputError)
    assert (first.file, first.line, first.field, first.reason) == (
        p, 1, "promt", "unknown field (did you mean 'prompt'?)")


def test_jsonl_rejects_bad_utf8_and_huge_lines_and_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl",
                 b'{"prompt": "caf\xe9"}\n'
                 + b'{"prompt": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
                 + b'{"prompt": "after"}\n'
                 + b"{" + b"y" * (3 * MAX_LINE_BYTES))  # last line: huge, no newline
    entries = read(path)
    assert messages(entries) == [
        f"{path}:1: line is not valid UTF-8",
        f"{path}:2: line is longer than 1 MiB",
        f"{path}:4: line is longer than 1 MiB",
    ]
    assert [j.line for j in jobs(entries)] == [3]


def test_jsonl_from_stdin(
    tmp_path: Path, refs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = jsonl({"prompt": "from stdin", "images": ["a.png"]}, {"prompt": 1})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    monkeypatch.chdir(refs)
    job, error = read("-")
    assert job == Job(prompt="from stdin", images=(str(refs / "a.png"),), line=1)
    assert str(error) == "<stdin>:2: field 'prompt': expected a string, got integer"


# --- CSV ---------------------------------------------------------------------------------


def test_csv_reads_columns_metadata_and_relative_images(tmp_path: Path, refs: Path) -> None:
    path = write(tmp_path / "in.csv", (
        "\ufeffid,prompt,model,aspect_ratio,image_size,images,n,seed,metadata.sku,metadata.tag\n"
        "a1,a fox,,16:9,2K,refs/a.png; refs/b.jpg,2,9,SKU-1,\n"
        ',"a multi-line\nprompt, with a comma",,,,,,,,\n'
        "\n"
        "b2,plain, , , , , , , ,t\n"
    ))
    entries = read(path)
    assert entries == [
        Job(prompt="a fox", id="a1", aspect_ratio="16:9", image_size="2K",
            images=(str(refs / "a.png"), str(refs / "b.jpg")), n=2, seed=9,
            metadata={"sku": "SKU-1"}, line=2),
        Job(prompt="a multi-line\nprompt, with a comma", line=3),
        Job(prompt="plain", id="b2", metadata={"tag": "t"}, line=6),
    ]


def test_csv_metadata_column_holds_json(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv",
                 'prompt,metadata\np,"{""k"": [1, 2]}"\nq,{bad\nr,\n')
    entries = read(path)
    assert entries[0] == Job(prompt="p", metadata={"k": [1, 2]}, line=2)
    assert str(entries[1]).startswith(f"{path}:3: field 'metadata': invalid JSON: ")
    assert entries[2] == Job(prompt="r", line=4)


def test_csv_row_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", (
        b"prompt,n,seed,aspect_ratio\n"
        b"a,x,,\n"           # 2
        b"b,,1.5,\n"          # 3
        b",2,,\n"             # 4
        b"c,,,9:9\n"          # 5
        b"d,1,2,1:1,extra\n"  # 6
        b"e\xff,,,\n"         # 7
        b'f "g" h,,,\n'       # 8: fine, quotes inside an unquoted field
        b'"bad"quote,,,\n'    # 9
        b"ok,,,\n"            # 10
        b"short\n"            # 11: fewer cells than columns is fine
    ))
    entries = read(path)
    assert messages(entries) == [
        f"{path}:2: field 'n': expected an integer, got 'x'",
        f"{path}:3: field 'seed': expected an integer, got '1.5'",
        f"{path}:4: field 'prompt': must not be empty",
        f"{path}:5: field 'aspect_ratio': '9:9' is not supported by {FLASH} (one of 1:1, "
        "2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9, 1:4, 4:1, 1:8, 8:1)",
        f"{path}:6: row has 5 fields but the header has 4",
        f"{path}:7: line is not valid UTF-8",
        f"{path}:9: malformed CSV: ',' expected after '\"'",
    ]
    assert [(j.prompt, j.line) for j in jobs(entries)] == [
        ('f "g" h', 8), ("ok", 10), ("short", 11)]


def test_csv_huge_line_is_an_error_for_that_row(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv",
                 b"prompt\n" + b"x" * (MAX_LINE_BYTES + 5) + b"\nafter\n")
    entries = read(path)
    assert messages(entries) == [f"{path}:2: line is longer than 1 MiB"]
    assert [(j.prompt, j.line) for j in jobs(entries)] == [("after", 3)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,text\n1,a\n", "the header row has no 'prompt' column"),
        ("promt,id\n", "the header row has no 'prompt' column (is 'promt' a typo?)"),
        ("prompt,imgaes\n", "field 'imgaes': unknown column (did you mean 'images'?)"),
        ("prompt,colour\n", "field 'colour': unknown column"),
        ("prompt,n,n\n", "field 'n': duplicate column in the header row"),
        ("prompt,metadata,metadata.a\n",
         "field 'metadata': use either a 'metadata' column or 'metadata.*' columns"),
        ("", "no header row (a CSV file needs one, with a 'prompt' column)"),
        ("\n\n", "no header row (a CSV file needs one, with a 'prompt' column)"),
    ],
)
def test_csv_header_problems_raise_before_iteration(
    tmp_path: Path, content: str, message: str
) -> None:
    path = write(tmp_path / "in.csv", content)
    with pytest.raises(InputError) as info:
        iter_input(path, default_model=FLASH)
    assert str(info.value) == f"{path}: {message}"


def test_csv_bad_header_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b"pr\xffompt\n")
    with pytest.raises(InputError, match=r":1: header row: line is not valid UTF-8$"):
        iter_input(path, default_model=FLASH)


# --- TXT ---------------------------------------------------------------------------------


def test_txt_one_prompt_a_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.TXT",
                 b"  a fox  \t\r\n\n# comment\nb\xffad\nwith\x00nul\nlast line no newline")
    entries = read(path, model="gemini-3-pro-image")
    assert messages(entries) == [
        f"{path}:4: line is not valid UTF-8",
        f"{path}:5: field 'prompt': contains a NUL character",
    ]
    assert [(j.prompt, j.line, j.model) for j in jobs(entries)] == [
        ("  a fox", 1, None), ("last line no newline", 6, None)]


# --- files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.jsonl", "no such file"),
        ("adir.jsonl", "is a directory, not an input file"),
        ("prompts.xlsx", "unknown input format '.xlsx': expected .jsonl, .ndjson, .csv, .txt, "
                         "or - for JSONL on stdin"),
        ("prompts", "unknown input format '(no extension)': expected .jsonl"),
    ],
)
def test_file_problems_raise_before_iteration(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "adir.jsonl").mkdir()
    write(tmp_path / "prompts.xlsx", "x")
    with pytest.raises(InputError) as info:
        iter_input(tmp_path / name, default_model=FLASH)
    assert str(info.value).startswith(f"{tmp_path / name}: {message}")
    assert info.value.line is None


def test_count_input(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", jsonl({"prompt": "a"}, {"x": 1}, {"prompt": "b"}, "#"))
    assert count_input(path) == (2, 1)
    assert count_input(write(tmp_path / "in.txt", "a\nb\nc\n")) == (3, 0)


# --- laziness ----------------------------------------------------------------------------


def test_first_job_of_a_big_file_comes_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = json.dumps({"prompt": "a photo of a lighthouse at dusk", "seed": 1}) + "\n"
    path.write_text(line * 200_000)
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    try:
        entries = iter_input(path, default_model=FLASH)
        first = next(entries)
        _, peak = tracemalloc.get_traced_memory()
        second = next(entries)
    finally:
        tracemalloc.stop()
    assert isinstance(first, Job) and first.line == 1
    assert isinstance(second, Job) and second.line == 2
    assert peak < 1_000_000, peak
    entries.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt"])
def test_reading_from_a_fifo_yields_before_the_writer_is_done(
    tmp_path: Path, suffix: str
) -> None:
    fifo = tmp_path / f"in{suffix}"
    os.mkfifo(fifo)
    header = "prompt\n" if suffix == ".csv" else ""
    lines = [json.dumps({"prompt": f"p{i}"}) if suffix == ".jsonl" else f"p{i}"
             for i in range(2)]
    release, done = threading.Event(), threading.Event()

    def writer() -> None:
        with open(fifo, "w") as f:
            f.write(header + lines[0] + "\n")
            f.flush()
            release.wait(timeout=10)
            f.write(lines[1] + "\n")
        done.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        entries = iter_input(fifo, default_model=FLASH)
        first = next(entries)
        assert not done.is_set(), "the reader waited for the whole input"
        assert isinstance(first, Job) and first.prompt == "p0"
    finally:
        release.set()
    rest = list(entries)
    thread.join(timeout=10)
    assert [j.prompt for j in jobs(rest)] == ["p1"]


# --- reference images --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp"), (HEIC, "image/heic"),
     (HEIF, "image/heif"), (AVIF, None), (b"GIF89a", None), (b"", None), (b"\x00" * 64, None)],
)
def test_sniff_image_type(data: bytes, mime: str | None) -> None:
    # One sniffer for input lines and Image: GIF and AVIF are refused by both.
    assert sniff_mime_type(data) == mime


def test_a_replaced_reference_image_is_checked_again(tmp_path: Path) -> None:
    image = write(tmp_path / "a.png", PNG)
    path = write(tmp_path / "in.jsonl", jsonl({"prompt": "p", "images": ["a.png"]}))
    assert messages(read(path)) == []
    write(image, b"not an image any more")
    assert messages(read(path)) == [
        f"{path}:1: field 'images[0]': not a PNG, JPEG, WEBP, HEIC or HEIF image: {image}"]


# --- properties: no input ever produces a traceback ----------------------------------------

_workdir = tempfile.TemporaryDirectory()


def _read_anything(name: str, data: bytes) -> None:
    path = Path(_workdir.name) / name
    path.write_bytes(data)
    try:
        entries = iter_input(path, default_model=FLASH)
    except InputError:
        return
    for entry in entries:
        assert isinstance(entry, Job | InputError)
        if isinstance(entry, Job):
            assert entry.line is not None and entry.prompt.strip()


_soup = st.lists(st.sampled_from(
    [b"prompt", b",", b";", b'"', b"\n", b"\r", b"{", b"}", b"[", b"]", b":", b"#", b"\x00",
     b"\xff", b"n", b"id", b"images", b"metadata.a", b"1", b"-", b'"prompt"', b"null", b" "]),
    max_size=60).map(b"".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.sampled_from([".jsonl", ".csv", ".txt"]), data=st.binary(max_size=300) | _soup)
def test_arbitrary_bytes_never_raise(suffix: str, data: bytes) -> None:
    _read_anything("fuzz" + suffix, data)
    if suffix == ".csv":
        _read_anything("fuzz.csv", b"prompt,n,seed,images,metadata.x,id\n" + data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)
_fields = st.sampled_from(["prompt", "id", "model", "aspect_ratio", "image_size", "images", "n",
                           "seed", "metadata", "promt"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(_fields, _json, max_size=5), max_size=5))
def test_arbitrary_json_objects_never_raise(objs: list[dict[str, Any]]) -> None:
    _read_anything("fuzz.jsonl", jsonl(*objs).encode())


def test_the_progress_estimate_skips_blank_lines_comments_and_the_csv_header(
    tmp_path: Path,
) -> None:
    from cometgen._cli._dry_run import count_lines

    assert count_lines(str(write(tmp_path / "in.txt", "a\n\n  # note\nb\n   \nc"))) == 3
    jsonl = write(tmp_path / "in.jsonl", '{"prompt": "a"}\n\n# x\n{"prompt": "b"}\n')
    assert count_lines(str(jsonl)) == 2
    assert count_lines(str(write(tmp_path / "in.csv", "prompt\n#1\n\nb\n"))) == 2
    assert count_lines(str(write(tmp_path / "empty.csv", ""))) == 0
    long = write(tmp_path / "long.txt", "x" * 300_000 + "\n" + "#" + "y" * 200_000 + "\nz")
    assert count_lines(str(long)) == 2
