"""Checks shared by every input reader: the fields a line may have, the Job they build,
and the reference images they name (each must be a readable PNG, JPEG, WEBP, HEIC or HEIF)."""

from __future__ import annotations

import difflib
import functools
import os
import stat
from typing import Any, Final

from .._exceptions import InputError
from .._image import IMAGE_TYPES_TEXT, sniff_mime_type
from ._job import Job, check_id, check_options, spec_for, type_name

__all__ = ["INPUT_FIELDS", "did_you_mean", "make_job"]

#: The keys a JSONL object (or the columns a CSV header) may have.
INPUT_FIELDS: Final = (
    "prompt", "id", "model", "aspect_ratio", "image_size", "images", "n", "seed", "metadata",
)
_FIELD_SET: Final = frozenset(INPUT_FIELDS)


def did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, INPUT_FIELDS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def make_job(
    obj: dict[str, Any], file: str, line: int, base: str, default_model: str
) -> Job | InputError:
    """Build and check a Job from decoded fields; any problem becomes an InputError value.

    A bad line that still names a usable ``id`` keeps it on the error (``item_id``), so
    the failure is recorded under the same key a corrected line will use.
    """
    result = _build_job(obj, file, line, base, default_model)
    if isinstance(result, InputError):
        raw_id = obj.get("id")
        if type(raw_id) is int:
            raw_id = str(raw_id)
        if isinstance(raw_id, str) and check_id(raw_id) is None:
            result.item_id = raw_id
    return result


def _build_job(
    obj: dict[str, Any], file: str, line: int, base: str, default_model: str
) -> Job | InputError:
    if unknown := obj.keys() - _FIELD_SET:
        key = next(k for k in obj if k in unknown)  # the first, in line order
        return InputError(f"unknown field{did_you_mean(key)}", file=file, line=line, field=key)
    if "prompt" not in obj:
        return InputError("is required", file=file, line=line, field="prompt")
    fields = {k: v for k, v in obj.items() if v is not None or k == "prompt"}
    job_id = fields.get("id")
    if type(job_id) is int:
        fields["id"] = str(job_id)
    images: list[str] = []
    if "images" in fields:
        raw_images = fields["images"]
        if not isinstance(raw_images, list):
            return InputError(f"expected an array of file paths, got {type_name(raw_images)}",
                              file=file, line=line, field="images")
        for i, image in enumerate(raw_images):
            if not isinstance(image, str) or not image.strip():
                what = type_name(image) if not isinstance(image, str) else "an empty string"
                return InputError(f"expected a file path, got {what}", file=file, line=line,
                                  field=f"images[{i}]")
            images.append(os.path.abspath(os.path.join(base, os.path.expanduser(image))))
        fields["images"] = tuple(images)
    try:
        job = Job(**fields, line=line)
    except InputError as exc:
        return InputError(exc.reason, file=file, line=line, field=exc.field)
    model = job.model or default_model
    problem = check_options(model, job.aspect_ratio, job.image_size)
    if problem is not None:
        return InputError(problem[1], file=file, line=line, field=problem[0])
    if images:
        spec = spec_for(model)
        if spec is not None and len(images) > spec.max_reference_images:
            return InputError(f"{len(images)} reference images, but {model} takes at most "
                              f"{spec.max_reference_images}", file=file, line=line,
                              field="images")
        for i, image in enumerate(images):
            if (why := _check_image_file(image)) is not None:
                return InputError(why, file=file, line=line, field=f"images[{i}]")
    return job


def _check_image_file(path: str) -> str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"no such file: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file: {path}"
    return _sniff_file(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def _sniff_file(path: str, mtime_ns: int, size: int) -> str | None:
    # Cached on (path, mtime, size): many jobs share the same reference image.
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if sniff_mime_type(head) is None:
        return f"not a {IMAGE_TYPES_TEXT} image: {path}"
    return None
