"""The public ``Job`` value, its expansion into request units, and stable item keys."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .._exceptions import ConfigError, InputError
from .._models import (
    ModelRegistry,
    ModelSpec,
    ServiceTier,
    active_models,
    check_service_tier,
    normalize_model,
    validate_image_options,
)

__all__ = [
    "MAX_ID_CHARS",
    "MAX_N",
    "MAX_PROMPT_CHARS",
    "Job",
    "WorkItem",
    "expand",
    "image_hashes",
    "image_sha256",
    "item_key",
    "legacy_first_key",
]

#: Longest prompt accepted, in characters.
MAX_PROMPT_CHARS = 100_000
#: Most images one job may ask for.
MAX_N = 64
#: Longest id accepted, in characters (ids become keys, and keys become file names).
MAX_ID_CHARS = 200

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_KEY_HEX_CHARS = 20
_encoder = msgspec.json.Encoder(order="sorted")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def spec_for(model: str) -> ModelSpec | None:
    """``model_spec`` in the active registry, cached."""
    return _spec_for(active_models(), model)


def check_options(
    model: str, aspect_ratio: str | None, image_size: str | None
) -> tuple[str, str] | None:
    """``validate_image_options`` in the active registry, cached."""
    return _check_options(active_models(), model, aspect_ratio, image_size)


# Input lines repeat a handful of (model, options) combinations; look each up once.
@functools.lru_cache(maxsize=256)
def _spec_for(registry: ModelRegistry, model: str) -> ModelSpec | None:
    return registry.get(model)


@functools.lru_cache(maxsize=1024)
def _check_options(
    registry: ModelRegistry, model: str, aspect_ratio: str | None, image_size: str | None
) -> tuple[str, str] | None:
    return validate_image_options(model, aspect_ratio, image_size, registry)


_JSON_NAMES = {
    bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
    tuple: "array", dict: "object", type(None): "null",
}


def type_name(value: object) -> str:
    """A JSON-flavoured name for the type of ``value``, for messages."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def check_id(value: str) -> str | None:
    """Why ``value`` is not a usable id, or None."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"is {len(value)} characters long (at most {MAX_ID_CHARS})"
    if _CONTROL_CHARS.search(value):
        return "must not contain control characters"
    return None


def check_prompt(value: str) -> str | None:
    """Why ``value`` is not a usable prompt, or None."""
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_PROMPT_CHARS:
        return f"is {len(value)} characters long (at most {MAX_PROMPT_CHARS})"
    if "\x00" in value:
        return "contains a NUL character"
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One prompt to generate ``n`` images for. Checked on construction (raises InputError)."""

    prompt: str
    id: str | None = None
    #: None means the run's default model.
    model: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    #: Reference images: file paths (absolute when read from an input file) or raw bytes.
    images: tuple[str | bytes, ...] = ()
    #: Images wanted; each is a separate request (image models return one per call).
    n: int = 1
    seed: int | None = None
    #: None means the run's tier (``Batch(service_tier=...)``, default "standard").
    service_tier: ServiceTier | None = None
    #: Any JSON value, carried through to the manifest.
    metadata: Any = None
    #: Source line, for messages; not part of the key.
    line: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.images, list):
            object.__setattr__(self, "images", tuple(self.images))
        problem = _check_job(self)
        if problem is not None:
            field, message = problem
            raise InputError(message, line=self.line, field=field)


def _check_job(job: Job) -> tuple[str, str] | None:
    if not isinstance(job.prompt, str):
        return "prompt", f"expected a string, got {type_name(job.prompt)}"
    if (why := check_prompt(job.prompt)) is not None:
        return "prompt", why
    if job.id is not None:
        if not isinstance(job.id, str):
            return "id", f"expected a string, got {type_name(job.id)}"
        if (why := check_id(job.id)) is not None:
            return "id", why
    for name, value in (("model", job.model), ("aspect_ratio", job.aspect_ratio),
                        ("image_size", job.image_size)):
        if value is None:
            continue
        if not isinstance(value, str):
            return name, f"expected a string, got {type_name(value)}"
        if not value.strip():
            return name, "must not be empty"
    if not isinstance(job.images, tuple):
        return "images", f"expected a tuple of paths or bytes, got {type_name(job.images)}"
    for i, image in enumerate(job.images):
        if not isinstance(image, str | bytes):
            return f"images[{i}]", f"expected a path or bytes, got {type_name(image)}"
    if type(job.n) is not int:
        return "n", f"expected an integer, got {type_name(job.n)}"
    if not 1 <= job.n <= MAX_N:
        return "n", f"must be between 1 and {MAX_N}, got {job.n}"
    if job.seed is not None:
        if type(job.seed) is not int:
            return "seed", f"expected an integer, got {type_name(job.seed)}"
        if not _INT32_MIN <= job.seed <= _INT32_MAX:
            return "seed", f"must fit in 32 bits, got {job.seed}"
    if job.service_tier is not None:
        try:
            check_service_tier(job.service_tier)
        except ConfigError as exc:
            return "service_tier", str(exc)
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkItem:
    """One request: a Job expands into ``n`` of these, with defaults resolved."""

    key: str
    job: Job
    #: 0-based position among the job's ``n`` images.
    index: int
    model: str
    aspect_ratio: str | None
    image_size: str | None
    #: For jobs with an id: a hash of the request (prompt, model, options, references), so a
    #: rerun notices an id reused for a different request.
    fingerprint: str | None = None
    service_tier: ServiceTier = "standard"


def image_sha256(image: str | bytes | os.PathLike[str]) -> str:
    """Hex sha256 of a reference image given as bytes or a file path (reads the file).

    File digests are cached by path, size and modification time: jobs often share images.
    """
    if isinstance(image, bytes):
        return hashlib.sha256(image).hexdigest()
    path = os.path.abspath(image)
    try:
        st = os.stat(path)
        return _file_sha256(path, st.st_size, st.st_mtime_ns)
    except OSError as exc:
        raise InputError(f"cannot read reference image: {exc.strerror or exc}",
                         file=os.fspath(image)) from exc


@functools.lru_cache(maxsize=4096)
def image_hashes(images: tuple[str | bytes, ...]) -> list[str]:
    """``image_sha256`` of each of a job's input images (blocking: run it in a thread)."""
    return [image_sha256(i) for i in images]


def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def item_key(
    *,
    prompt: str,
    model: str,
    aspect_ratio: str | None = None,
    image_size: str | None = None,
    seed: int | None = None,
    image_hashes: Sequence[str] = (),
    index: int = 0,
    id: str | None = None,
    n: int = 1,
) -> str:
    """The key of one request: the id (``id-index`` for index >= 1), else ``h-`` + a hash.

    Pass effective values (defaults already resolved) so reruns agree. Keys never depend on
    ``n``: the first image is ``id`` whatever ``n`` is, so raising ``n`` from 1 to 2 only
    adds ``id-1``. (Folders made before this named the first of n > 1 images ``id-0``;
    ``legacy_first_key`` gives that name, which ``Batch`` still honours.)
    """
    if id is not None:
        return id if index == 0 else f"{id}-{index}"
    canonical = _encoder.encode({
        "aspect_ratio": aspect_ratio,
        "image_size": image_size,
        "images": list(image_hashes),
        "index": index,
        "model": normalize_model(model),
        "prompt": prompt,
        "seed": seed,
    })
    return "h-" + hashlib.sha256(canonical).hexdigest()[:_KEY_HEX_CHARS]


def legacy_first_key(item: WorkItem) -> str | None:
    """The key older versions gave ``item`` (``id-0`` for the first of n > 1), if different."""
    if item.job.id is not None and item.index == 0 and item.job.n > 1:
        return f"{item.job.id}-0"
    return None


def expand(
    job: Job,
    *,
    default_model: str,
    default_aspect_ratio: str | None = None,
    default_image_size: str | None = None,
    image_hashes: Sequence[str] = (),
    default_service_tier: ServiceTier = "standard",
) -> list[WorkItem]:
    """Resolve defaults and split ``job`` into ``job.n`` work items with stable keys.

    A run-wide ``default_image_size`` is ignored for models that take no size; the model's
    own default size is filled in, so an omitted size and its default share a key.
    ``image_hashes`` (sha256 hex per reference image) are computed by reading the files when
    not given. The service tier is not part of the key: rerunning on another tier resumes.
    Raises InputError when the effective options do not suit the model.
    """
    model = normalize_model(job.model or default_model)
    spec = spec_for(model)
    aspect_ratio = job.aspect_ratio or default_aspect_ratio
    image_size = job.image_size
    if image_size is None and (spec is None or spec.image_sizes):
        image_size = default_image_size
    if image_size is None and spec is not None:
        image_size = spec.default_image_size
    problem = check_options(model, aspect_ratio, image_size)
    if problem is not None:
        raise InputError(problem[1], line=job.line, field=problem[0])
    if not image_hashes:
        image_hashes = [image_sha256(image) for image in job.images]
    elif len(image_hashes) != len(job.images):
        raise ValueError(
            f"got {len(image_hashes)} image hashes for {len(job.images)} reference images"
        )
    fingerprint = None
    if job.id is not None:
        fingerprint = item_key(
            prompt=job.prompt, model=model, aspect_ratio=aspect_ratio, image_size=image_size,
            seed=job.seed, image_hashes=image_hashes,
        )[2:]
    return [
        WorkItem(
            key=item_key(
                prompt=job.prompt, model=model, aspect_ratio=aspect_ratio,
                image_size=image_size, seed=job.seed, image_hashes=image_hashes,
                index=index, id=job.id, n=job.n,
            ),
            job=job, index=index, model=model, aspect_ratio=aspect_ratio,
            image_size=image_size, fingerprint=fingerprint,
            service_tier=job.service_tier or default_service_tier,
        )
        for index in range(job.n)
    ]
