"""aiohttp's failures in cometgen's terms: one table, exception class x request phase.

The phase decides what a failure means for billing. Before a connection is held (``pool``:
waiting for a free pooled connection; ``connect``: opening a new one) nothing can have
reached the provider, so the failure is safely retryable. From the moment a connection is
held (``sent``) the provider may have received and billed the request: ambiguous.
"""

from __future__ import annotations

from typing import Literal

import aiohttp

from .._exceptions import (
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    TransportError,
)

__all__ = ["PHASES", "TRANSLATION", "Phase", "timeout_error", "translate"]

Phase = Literal["pool", "connect", "sent"]
PHASES: tuple[Phase, ...] = ("pool", "connect", "sent")

_Row = tuple[type[TransportError], type[TransportError], type[TransportError]]
_DROPPED: _Row = (ConnectError, ConnectError, ConnectionDroppedError)
_TIMEOUT: _Row = (PoolTimeout, ConnectTimeout, ReadTimeout)

#: Exception class -> the cometgen class in each phase (pool, connect, sent). An exception is
#: looked up by its MRO, most specific first, so subclasses (``ConnectionTimeoutError``,
#: ``ClientConnectorCertificateError``, ``ClientHttpProxyError``...) take their parent's row.
TRANSLATION: dict[type[BaseException], _Row] = {
    # aiohttp's own timers (off by default: the transport times attempts itself) and ours.
    aiohttp.ServerTimeoutError: _TIMEOUT,
    TimeoutError: _TIMEOUT,
    # Raised while opening a connection (DNS, TCP, TLS, proxy): nothing was sent.
    aiohttp.ClientConnectorError: (ConnectError, ConnectError, ConnectError),
    aiohttp.ServerDisconnectedError: _DROPPED,
    aiohttp.ClientPayloadError: _DROPPED,  # a short or malformed body
    aiohttp.ClientResponseError: _DROPPED,  # an unparsable answer, a failed proxy CONNECT
    aiohttp.ClientOSError: _DROPPED,
    aiohttp.ClientError: _DROPPED,
    OSError: _DROPPED,  # a socket error outside aiohttp's wrappers
}

_WHAT = {"pool": "waiting for a pooled connection", "connect": "connecting",
         "sent": "after sending"}


def translate(exc: BaseException, phase: Phase) -> TransportError | None:
    """The cometgen error for ``exc`` raised in ``phase``; ``None`` if it is not a transport
    failure (a bug, a cancellation), which must propagate as it is."""
    for cls in type(exc).__mro__:
        row = TRANSLATION.get(cls)
        if row is not None:
            error = row[PHASES.index(phase)]
            return error(f"{type(exc).__name__} {_WHAT[phase]}: {exc}")
    return None


def timeout_error(phase: Phase, limit: float | None) -> TransportError:
    """The error for one of the transport's own deadlines expiring in ``phase``."""
    cls = _TIMEOUT[PHASES.index(phase)]
    return cls(f"timed out {_WHAT[phase]} (limit {limit}s)")
