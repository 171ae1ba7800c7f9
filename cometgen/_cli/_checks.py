"""What ``cometgen run`` checks before it sends anything, and the folder's final counts."""

from __future__ import annotations

import difflib
import logging
import math
import os
from typing import Any, Final

from .._bulk._halt import CURRENT_KEY
from .._bulk._job import check_options, spec_for
from .._bulk._manifest import ManifestState, summarize
from .._bulk._provenance import MOCK_ENDPOINT
from .._config import API_KEY_ENV, Limits, Timeouts, check_api_key, resolve_base_url
from .._exceptions import ConfigError, InputError
from .._models import active_models, normalize_model
from .._retry import RetryPolicy
from ._settings import RunSettings, parse_shard

__all__ = [
    "check_endpoint", "check_paths", "endpoint_for", "folder_counts", "install_item_names",
    "validate",
]

logger = logging.getLogger("cometgen")

_FLAGS = {"aspect_ratio": "--aspect-ratio", "image_size": "--image-size"}


#: ``Limits`` fields and the ``cometgen run`` options that set them.
_LIMIT_FLAGS: Final = {"concurrency": "--concurrency", "rpm": "--rpm", "ipm": "--ipm",
                       "shared": "--shared-limits", "namespace": "--limits-namespace"}


def validate(settings: RunSettings) -> tuple[int, int] | None:
    """Check every run-wide option as a real run would use it; returns the parsed shard.

    Raises ConfigError (exit 2) before any request: a bad ``--image-size`` would otherwise
    fail every line of the input, one request at a time.
    """
    shard = parse_shard(settings.shard)
    if settings.base_url and not settings.api_key:
        raise ConfigError(f"--base-url {settings.base_url} needs an API key: pass --api-key or "
                          f"set {API_KEY_ENV} (without both, runs use the built-in mock)")
    if settings.api_key:
        check_api_key(settings.api_key, "the API key (--api-key, $COMETAPI_KEY or config)")
    if settings.max_cost is not None and settings.max_cost < 0:
        raise ConfigError(f"--max-cost must be >= 0, got {settings.max_cost}")
    if settings.grace_period < 0:
        raise ConfigError(f"grace_period must be >= 0, got {settings.grace_period}")
    if settings.job_timeout is not None and not settings.job_timeout > 0:
        raise ConfigError(f"--job-timeout must be > 0, got {settings.job_timeout}")
    interval = settings.progress_interval
    if interval is not None and not 0 < interval < math.inf:
        raise ConfigError(f"--progress-interval must be a number of seconds > 0, got {interval}")
    # The same constructors the run uses: their checks, their messages (in flag names).
    try:
        Limits(concurrency=settings.concurrency, rpm=settings.rpm, ipm=settings.ipm,
               shared=settings.shared_limits, namespace=settings.limits_namespace)
    except ConfigError as exc:
        message = str(exc).replace(" or None,", ",")  # a flag is either given or not
        for field, flag in _LIMIT_FLAGS.items():
            message = message.replace(f"Limits.{field} ", f"{flag} ")
        raise ConfigError(message) from None
    RetryPolicy(max_attempts=settings.max_attempts,
                max_ambiguous_retries=settings.retry_ambiguous)
    if settings.timeout is not None:
        Timeouts(total=settings.timeout)
    model = normalize_model(settings.model)
    spec = spec_for(model)
    if spec is None:
        close = difflib.get_close_matches(model, list(active_models().specs), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        logger.warning("model %r is not in cometgen's model table%s: options are not checked "
                       "and the endpoint may refuse it (404 halts the run)", model, hint)
        return shard
    # A run-wide size is ignored for models that take none (see expand()).
    size = settings.image_size if spec.image_sizes else None
    problem = check_options(model, settings.aspect_ratio, size)
    if problem is not None:
        field, message = problem
        raise ConfigError(f"{_FLAGS.get(field, field)}: {message}")
    return shard


def check_paths(input_path: str, out_dir: str) -> bool:
    """Clear words for a folder given as INPUT, a file given as OUTDIR; True: INPUT is empty."""
    if input_path != "-" and os.path.isdir(input_path):
        raise InputError("is a directory: INPUT must be a .jsonl, .csv or .txt file (or - "
                         "for JSONL on stdin)", file=input_path)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"{out_dir!r} is a file: OUTDIR must be a folder (it is created "
                          "when missing)")
    if input_path != "-" and os.path.isfile(input_path) and os.path.getsize(input_path) == 0:
        # Every format alike (a CSV would otherwise complain about its missing header).
        logger.warning("%s: the input file is empty: nothing to do", input_path)
        return True
    return False


def endpoint_for(settings: RunSettings) -> str:
    """What the manifest records as the endpoint: "mock" for the embedded default."""
    if not settings.api_key and not settings.base_url:
        return MOCK_ENDPOINT
    return resolve_base_url(settings.base_url)


def check_endpoint(state: ManifestState | None, endpoint: str, *, allow: bool) -> None:
    """Refuse to mix the built-in mock's images and real ones in one folder, unless allowed."""
    if state is None or allow or not state.endpoints:
        return
    on_mock = endpoint == MOCK_ENDPOINT
    other = sorted(e for e in state.endpoints if (e == MOCK_ENDPOINT) != on_mock)
    if not other:
        return
    if on_mock:
        raise ConfigError(
            f"this folder was made on {', '.join(other)}, but this run would use the built-in "
            "mock (no API key set): set COMETAPI_KEY, or pass --allow-endpoint-change")
    raise ConfigError(
        "this folder holds images made on the built-in mock server (synthetic): a real run "
        f"on {endpoint} would skip them as done; use a new OUTDIR, or pass "
        "--allow-endpoint-change")


def folder_counts(out_dir: str) -> dict[str, Any]:
    """The folder's item counts after the run (what the exit code describes)."""
    if not os.path.exists(os.path.join(out_dir, "manifest.jsonl")):
        return {"total": 0}
    return summarize(out_dir)


class _ItemName(logging.Filter):
    """Prefixes log lines logged while an item runs (retries, say) with the item's key."""

    def filter(self, record: logging.LogRecord) -> bool:
        key = CURRENT_KEY.get()
        if key is not None and not getattr(record, "_cometgen_key", False):
            record.msg = key.replace("%", "%%") + ": " + str(record.msg)
            record._cometgen_key = True
        return True


def install_item_names() -> None:
    logger = logging.getLogger("cometgen")
    if not any(isinstance(f, _ItemName) for f in logger.filters):
        logger.addFilter(_ItemName())
