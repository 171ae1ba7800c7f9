"""Lazy readers for bulk input: JSONL (or stdin), CSV and plain text, one Job per line.

Each reader is a generator that holds one line at a time, so a million-line file yields its
first job at once. Bad lines come out as ``InputError`` values (file, line, field) instead of
stopping the run; problems with the file itself raise before iteration starts.
"""

from __future__ import annotations

import csv
import difflib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

import msgspec

from .._exceptions import InputError
from .._models import DEFAULT_MODEL
from ._input_fields import INPUT_FIELDS, did_you_mean, make_job
from ._job import Job, type_name

__all__ = [
    "INPUT_FIELDS",
    "MAX_LINE_BYTES",
    "count_input",
    "iter_input",
]

#: Longest input line accepted, in bytes; longer lines are skipped with an InputError.
MAX_LINE_BYTES: Final = 1 << 20
_FORMATS: Final = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".txt": "txt"}
_BOM: Final = b"\xef\xbb\xbf"
_decoder: Final = msgspec.json.Decoder()
_TOO_LONG: Final = f"line is longer than {MAX_LINE_BYTES // (1 << 20)} MiB"


def iter_input(
    source: str | os.PathLike[str], *, default_model: str
) -> Iterator[Job | InputError]:
    """Open ``source`` and return a lazy iterator of Jobs and per-line InputErrors.

    ``source`` is a ``.jsonl``/``.ndjson``, ``.csv`` or ``.txt`` file, or ``"-"`` for JSONL on
    stdin. Raises InputError at once when the file cannot be used (missing, a directory,
    unreadable, unknown extension, CSV without a ``prompt`` column). Relative reference image
    paths are resolved against the input file's directory (the working directory for stdin).
    """
    if isinstance(source, str) and source == "-":
        return _read_jsonl(_stdin_bytes(), "<stdin>", os.getcwd(), default_model, close=False)
    file = os.fspath(source)
    path = Path(source)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"unknown input format {path.suffix or '(no extension)'!r}: "
            "expected .jsonl, .ndjson, .csv, .txt, or - for JSONL on stdin", file=file)
    f = _open(path, file)
    base = os.path.dirname(os.path.abspath(path))
    if fmt == "jsonl":
        return _read_jsonl(f, file, base, default_model)
    if fmt == "txt":
        return _read_txt(f, file, default_model)
    try:
        lines = _CsvLines(f)
        reader = csv.reader(lines, strict=True)
        columns = _read_csv_header(reader, lines, file)
    except BaseException:
        f.close()
        raise
    return _read_csv(f, reader, lines, columns, file, base, default_model)


def count_input(
    source: str | os.PathLike[str], *, default_model: str = DEFAULT_MODEL
) -> tuple[int, int]:
    """Stream through ``source`` and count (good, bad) lines, for dry runs."""
    good = bad = 0
    for entry in iter_input(source, default_model=default_model):
        if isinstance(entry, Job):
            good += 1
        else:
            bad += 1
    return good, bad


def _open(path: Path, file: str) -> IO[bytes]:
    try:
        if path.is_dir():
            raise InputError("is a directory, not an input file", file=file)
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError("no such file", file=file) from None
    except PermissionError:
        raise InputError("permission denied", file=file) from None
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", file=file) from None


def _raw_lines(f: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per physical line; None for a line over the size limit."""
    lineno = 0
    while raw := f.readline(MAX_LINE_BYTES + 1):
        lineno += 1
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            # Skip the rest of the line in bounded chunks rather than holding it.
            while (chunk := f.readline(1 << 16)) and not chunk.endswith(b"\n"):
                pass
            yield lineno, None
        else:
            yield lineno, raw


# --- JSONL ---------------------------------------------------------------------------


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


#: What a JSON value can start with; a line starting otherwise is likely a plain prompt.
_JSON_STARTS: Final = frozenset(b'{["-0123456789tfn"')
_NOT_JSON: Final = ('not JSON: a JSONL line is one object such as {"prompt": "a red fox"} '
                    "(plain prompts, one a line, go in a .txt file)")


def _read_jsonl(
    f: IO[bytes], file: str, base: str, default_model: str, *, close: bool = True
) -> Iterator[Job | InputError]:
    try:
        for lineno, raw in _raw_lines(f):
            if raw is None:
                yield InputError(_TOO_LONG, file=file, line=lineno)
                continue
            stripped = raw.strip()
            if not stripped or stripped.startswith(b"#"):
                continue
            try:
                obj = _decoder.decode(stripped)
            except UnicodeDecodeError:
                yield InputError("line is not valid UTF-8", file=file, line=lineno)
                continue
            except RecursionError:
                yield InputError("invalid JSON: nested too deeply", file=file, line=lineno)
                continue
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # msgspec >= 0.23 reports bad UTF-8 as a DecodeError, earlier ones raised
                # UnicodeDecodeError: the same message either way.
                reason = "line is not valid UTF-8" if not _is_utf8(stripped) else (
                    f"invalid JSON: {exc}" if stripped[0] in _JSON_STARTS else _NOT_JSON)
                yield InputError(reason, file=file, line=lineno)
                continue
            if not isinstance(obj, dict):
                yield InputError(f"expected a JSON object, got {type_name(obj)}",
                                 file=file, line=lineno)
                continue
            yield make_job(obj, file, lineno, base, default_model)
    finally:
        if close:
            f.close()


# --- plain text ----------------------------------------------------------------------


def _read_txt(f: IO[bytes], file: str, default_model: str) -> Iterator[Job | InputError]:
    with f:
        for lineno, raw in _raw_lines(f):
            if raw is None:
                yield InputError(_TOO_LONG, file=file, line=lineno)
                continue
            try:
                prompt = raw.decode("utf-8").rstrip()
            except UnicodeDecodeError:
                yield InputError("line is not valid UTF-8", file=file, line=lineno)
                continue
            if not prompt.strip() or prompt.lstrip().startswith("#"):
                continue
            yield make_job({"prompt": prompt}, file, lineno, "", default_model)


# --- CSV -----------------------------------------------------------------------------


class _CsvLines:
    """Feeds decoded lines to ``csv.reader``, remembering which lines were unusable."""

    def __init__(self, f: IO[bytes]) -> None:
        self._lines = _raw_lines(f)
        #: line number -> problem, for lines of the row being read.
        self.problems: dict[int, str] = {}

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        lineno, raw = next(self._lines)
        if raw is None:
            self.problems[lineno] = _TOO_LONG
            return "\n"
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.problems[lineno] = "line is not valid UTF-8"
            return raw.decode("utf-8", "replace")


def _read_csv_header(reader: Any, lines: _CsvLines, file: str) -> list[str]:
    try:
        return _parse_csv_header(reader, lines, file)
    except csv.Error as exc:
        raise InputError(f"header row: malformed CSV: {exc}", file=file,
                         line=reader.line_num) from None


def _parse_csv_header(reader: Any, lines: _CsvLines, file: str) -> list[str]:
    for row in reader:
        if lines.problems:
            line, problem = next(iter(lines.problems.items()))
            raise InputError(f"header row: {problem}", file=file, line=line)
        if not any(cell.strip() for cell in row):
            continue
        columns = [cell.strip() for cell in row]
        if "prompt" not in columns:
            typo = difflib.get_close_matches("prompt", columns, n=1, cutoff=0.6)
            hint = f" (is {typo[0]!r} a typo?)" if typo else ""
            raise InputError(f"the header row has no 'prompt' column{hint}", file=file)
        seen: set[str] = set()
        for column in columns:
            if column in seen:
                raise InputError("duplicate column in the header row", file=file, field=column)
            seen.add(column)
            if column not in INPUT_FIELDS and not _is_metadata_column(column):
                raise InputError(f"unknown column{did_you_mean(column)}", file=file,
                                 field=column)
        if "metadata" in seen and any(_is_metadata_column(c) for c in columns):
            raise InputError("use either a 'metadata' column or 'metadata.*' columns",
                             file=file, field="metadata")
        return columns
    raise InputError("no header row (a CSV file needs one, with a 'prompt' column)", file=file)


def _is_metadata_column(column: str) -> bool:
    return column.startswith("metadata.") and len(column) > len("metadata.")


def _read_csv(
    f: IO[bytes], reader: Any, lines: _CsvLines, columns: list[str], file: str, base: str,
    default_model: str,
) -> Iterator[Job | InputError]:
    with f:
        end = reader.line_num
        while True:
            start = end + 1
            try:
                row: list[str] = next(reader)
                error = None
            except StopIteration:
                return
            except csv.Error as exc:
                row, error = [], f"malformed CSV: {exc}"
            end = reader.line_num
            if lines.problems:
                error = next(iter(lines.problems.values()))
                lines.problems.clear()
            if error is not None:
                yield InputError(error, file=file, line=start)
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(columns) and any(c.strip() for c in row[len(columns):]):
                yield InputError(f"row has {len(row)} fields but the header has {len(columns)}",
                                 file=file, line=start)
                continue
            yield _csv_job(dict(zip(columns, row, strict=False)), file, start, base,
                           default_model)


def _csv_job(
    cells: dict[str, str], file: str, line: int, base: str, default_model: str
) -> Job | InputError:
    fields: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    for column, cell in cells.items():
        value = cell if column == "prompt" else cell.strip()
        if not value.strip():
            continue
        if _is_metadata_column(column):
            metadata[column.removeprefix("metadata.")] = value
        elif column in ("n", "seed"):
            try:
                fields[column] = int(value)
            except ValueError:
                return InputError(f"expected an integer, got {value!r}", file=file, line=line,
                                  field=column)
        elif column == "images":
            fields["images"] = [p.strip() for p in value.split(";") if p.strip()]
        elif column == "metadata":
            try:
                fields["metadata"] = _decoder.decode(value.encode())
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
                return InputError(f"invalid JSON: {exc}", file=file, line=line, field=column)
        else:
            fields[column] = value
    if metadata:
        fields["metadata"] = metadata
    if "prompt" not in fields and cells.get("prompt") is not None:
        return InputError("must not be empty", file=file, line=line, field="prompt")
    return make_job(fields, file, line, base, default_model)


def _stdin_bytes() -> BinaryIO:
    """Standard input as bytes, through a reader of its own when it is a real file.

    The batch reads input in a daemon thread, which may still be blocked reading when the
    process exits; if that read held ``sys.stdin.buffer``'s lock, the interpreter's shutdown
    would abort ("could not acquire lock for <stdin> at interpreter shutdown").
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an in-memory stream
        return sys.stdin.buffer
    return open(fd, "rb", closefd=False)  # lives as long as the process
