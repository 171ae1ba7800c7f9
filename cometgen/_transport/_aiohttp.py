"""``AiohttpTransport``, the default transport: one pooled ``aiohttp.ClientSession``.

It times each attempt itself with one anyio cancel scope whose deadline follows the phase
(pool wait, connect, whole attempt), learns the phase from aiohttp's public tracing hooks,
reads the body with ``resp.read()``, and translates every failure once, here
(``TRANSLATION``: exception class x request phase). The phase decides what a failure means
for billing: before a connection is held (``pool``, ``connect``) nothing can have reached the
provider, so the failure is safely retryable; once one is held (``sent``) the provider may
have received and billed the request: ambiguous. The only module that imports aiohttp.
"""

from __future__ import annotations

import functools
import math
import os
import ssl
import urllib.request
from types import SimpleNamespace
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio

from .._config import DEFAULT_MAX_CONNECTIONS, Timeouts
from .._exceptions import (
    ConfigError,
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    TransportError,
)
from ._protocol import TransportRequest, TransportResponse

__all__ = [
    "PHASES",
    "TRANSLATION",
    "AiohttpTransport",
    "Phase",
    "Verify",
    "ssl_option",
    "timeout_error",
    "translate",
]

#: ``True`` (the system's CAs), ``False`` (no verification), a CA bundle path, or a context.
Verify = bool | str | os.PathLike[str] | ssl.SSLContext


@functools.cache
def _system_trust() -> ssl.SSLContext:
    # ~40 ms to load the system CAs: once per process, at the first connection.
    return ssl.create_default_context()


def ssl_option(verify: Verify) -> bool | ssl.SSLContext:
    """``verify=`` as aiohttp's ``ssl=``: a CA bundle path becomes a context trusting it.

    ``True`` stays ``True`` here and becomes an explicit default context when the pool
    opens: aiohttp 3.9.0's ``ssl=True`` skipped certificate verification (seen at the
    dependency floor).
    """
    if isinstance(verify, bool | ssl.SSLContext):
        return verify
    if isinstance(verify, str | os.PathLike):
        try:
            return ssl.create_default_context(cafile=os.fspath(verify))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"verify={os.fspath(verify)!r}: no CA bundle there: {exc}") from exc
    raise ConfigError(f"verify must be a bool, a CA bundle path or an ssl.SSLContext, "
                      f"got {type(verify).__name__}")


class _Attempt:
    """One request's phase and deadlines; reached from the trace hooks by ``trace_request_ctx``."""

    __slots__ = ("holding", "limit", "phase", "scope", "timeouts", "total_deadline")

    def __init__(self, timeouts: Timeouts) -> None:
        now = anyio.current_time()
        self.timeouts = timeouts
        self.phase: Phase = "pool"
        self.holding = False
        self.total_deadline = _deadline(now, timeouts.total)
        self.scope = anyio.CancelScope()
        self._limit_by(_deadline(now, timeouts.pool), timeouts.pool)

    def _limit_by(self, deadline: float, limit: float | None) -> None:
        # The phase's own limit, unless the whole attempt's ends first.
        if deadline < self.total_deadline:
            self.scope.deadline, self.limit = deadline, limit
        else:
            self.scope.deadline, self.limit = self.total_deadline, self.timeouts.total

    def connecting(self) -> None:
        self.phase = "connect"
        self._limit_by(_deadline(anyio.current_time(), self.timeouts.connect),
                       self.timeouts.connect)

    def sent(self) -> None:
        self.phase = "sent"
        self.holding = True
        self._limit_by(math.inf, None)


def _deadline(now: float, limit: float | None) -> float:
    return math.inf if limit is None else now + limit


def _attempt_of(ctx: SimpleNamespace) -> _Attempt | None:
    attempt = ctx.trace_request_ctx
    return attempt if isinstance(attempt, _Attempt) else None


class AiohttpTransport:
    """The default ``AsyncTransport``: a pool of up to ``max_connections`` connections.

    ``proxy``: an ``http://`` proxy URL for every request; without one, ``HTTPS_PROXY`` /
    ``HTTP_PROXY`` / ``NO_PROXY`` from the environment apply (``trust_env``). ``verify``:
    see ``Verify``. Close with ``aclose``.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        proxy: str | None = None,
        verify: Verify = True,
        trust_env: bool = True,
    ) -> None:
        if max_connections < 1:
            raise ConfigError(f"max_connections must be >= 1, got {max_connections!r}")
        if proxy is not None and not proxy.startswith(("http://", "https://")):
            raise ConfigError(f"proxy must be an http:// or https:// URL, got {proxy!r}")
        self.max_connections = max_connections
        self._proxy = proxy
        self._ssl = ssl_option(verify)
        self._trust_env = trust_env
        #: The environment's proxy for each (scheme, host), looked up once: aiohttp's own
        #: ``trust_env`` re-reads the environment and ``~/.netrc`` (in a worker thread) on
        #: every request, ~0.3 ms of CPU each.
        self._env_proxies: dict[tuple[str, str], str | None] = {}
        self._session: aiohttp.ClientSession | None = None
        self._held = 0

    @property
    def acquired_connections(self) -> int:
        """Connections held by requests under way now (0 when idle)."""
        return self._held

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            tracing = aiohttp.TraceConfig()
            tracing.on_connection_create_start.append(_on_connecting)
            tracing.on_connection_create_end.append(self._on_connection)
            tracing.on_connection_reuseconn.append(self._on_connection)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections,
                    limit_per_host=self.max_connections,
                    ssl=_system_trust() if self._ssl is True else self._ssl,
                ),
                # Attempts are timed by their own cancel scope (see ``_Attempt``).
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None,
                                              sock_read=None),
                trust_env=False,  # proxies from the environment: see ``_proxy_for``
                trace_configs=[tracing],
                raise_for_status=False,
            )
        return self._session

    async def _on_connection(self, _s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        # A connection is held from here: the provider may receive (and bill) the request.
        attempt = _attempt_of(ctx)
        if attempt is not None:
            self._hold(attempt)

    def _hold(self, attempt: _Attempt) -> None:
        if not attempt.holding:
            attempt.sent()
            self._held += 1

    def _proxy_for(self, url: str) -> str | None:
        """``proxy=``, else (with ``trust_env``) ``HTTPS_PROXY`` / ``HTTP_PROXY`` unless
        ``NO_PROXY`` names the host: the standard library's reading of the environment."""
        if self._proxy is not None or not self._trust_env:
            return self._proxy
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key not in self._env_proxies:
            proxies = urllib.request.getproxies()
            proxy = proxies.get(parts.scheme)
            host = parts.hostname or ""
            if proxy is not None and urllib.request.proxy_bypass(host):
                proxy = None
            self._env_proxies[key] = proxy
        return self._env_proxies[key]

    async def send(self, request: TransportRequest) -> TransportResponse:
        """Send ``request`` and return the whole response; raise a ``TransportError``."""
        session = self._open()
        attempt = _Attempt(request.timeouts)
        try:
            with attempt.scope:
                try:
                    async with session.request(
                        request.method,
                        request.url,
                        data=request.body,
                        headers=request.headers,
                        allow_redirects=False,
                        proxy=self._proxy_for(request.url),
                        trace_request_ctx=attempt,
                    ) as resp:
                        self._hold(attempt)  # done by a hook already, unless none fired
                        body = await resp.read()
                        return TransportResponse(
                            status=resp.status,
                            headers=resp.headers,
                            body=body,
                            reason=resp.reason or "",
                        )
                except Exception as exc:
                    error = translate(exc, attempt.phase)
                    if error is None:
                        raise
                    raise error from exc
        finally:
            if attempt.holding:
                self._held -= 1
        # Only reached when the scope's deadline cancelled the request.
        raise timeout_error(attempt.phase, attempt.limit)

    async def aclose(self) -> None:
        """Close the pool (shielded from cancellation)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            with anyio.CancelScope(shield=True):
                await session.close()


async def _on_connecting(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
    # Past the pool wait: a new connection is being opened (nothing sent yet).
    attempt = _attempt_of(ctx)
    if attempt is not None:
        attempt.connecting()


# --- aiohttp failures in cometgen's terms -------------------------------------------------

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
