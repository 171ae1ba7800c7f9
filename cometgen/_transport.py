"""The HTTP transport: the only client module that imports aiohttp.

It owns one ``ClientSession``/``TCPConnector``, sends one POST, reads the body once as bytes,
and translates every aiohttp failure into the cometgen tree, once, here. The phase a failure
happened in (pool wait, connect, after sending) decides whether the request may have reached
the provider, which the retry policy needs to never pay twice.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio

# cometgen runs on asyncio only (aiohttp). anyio imports its backend lazily, at the first
# primitive made inside a loop: ~15 ms that would land in the event loop's first iteration.
import anyio._backends._asyncio
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from ._config import CONNECTS_PER_ITERATION, REQUEST_STARTS_PER_ITERATION
from ._exceptions import (
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    TransportError,
)
from ._pacing import BodyPacer, BurstGate

__all__ = ["AiohttpTransport", "RawResponse"]


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    reason: str
    headers: Mapping[str, str]
    #: A ``bytearray`` for a large or unsized 200 answer (read into one buffer, see
    #: ``_read_into``); nothing else holds it, so it is as immutable as ``bytes`` in practice.
    body: bytes | bytearray


class _Phase:
    """Where one request is; updated by ``_PhaseConnector``."""

    __slots__ = ("stage",)

    def __init__(self) -> None:
        self.stage = "pool"  # pool -> connect -> sent


#: The phase of the request the current task is sending. aiohttp awaits the connector in
#: the task that made the request, so a context variable reaches it; an aiohttp
#: ``TraceConfig`` did the same job at ~4% of the CPU of a small request (a ``Trace`` and
#: its signals per request, on every step of every request).
_current_phase: ContextVar[_Phase | None] = ContextVar("cometgen_phase", default=None)


class _PhaseConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` that marks the current request's phase as it gets a connection,
    and opens at most ``CONNECTS_PER_ITERATION`` new connections per loop iteration."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._connect_gate = BurstGate(per_iteration=CONNECTS_PER_ITERATION)

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        phase = _current_phase.get()
        conn = await super().connect(req, traces, timeout)
        if phase is not None:
            # From here on the provider may receive (and bill) the request. Nothing is
            # awaited between getting the connection and this line.
            phase.stage = "sent"
        return conn

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        # Past the pool wait: a new connection is being opened (nothing sent yet).
        phase = _current_phase.get()
        if phase is not None:
            phase.stage = "connect"
        await self._connect_gate.wait()
        return await super()._create_connection(req, traces, timeout)


class AiohttpTransport:
    """One pooled aiohttp session. Create inside a running event loop; close with ``aclose``."""

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout: float | None,
        pool_timeout: float | None,
        total_timeout: float | None,
        ssl_context: ssl.SSLContext | None = None,
        pacer: BodyPacer | None = None,
    ) -> None:
        self._max_connections = max_connections
        self.pacer = pacer if pacer is not None else BodyPacer()
        self._burst = BurstGate(per_iteration=REQUEST_STARTS_PER_ITERATION)
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._total_timeout = total_timeout
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = _PhaseConnector(
                limit=self._max_connections,
                limit_per_host=self._max_connections,
                ssl=self._ssl if self._ssl is not None else True,
                enable_cleanup_closed=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Per-request timeouts are passed with each request (post); none by default.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._connect_timeout, connect=None
                ),
                auto_decompress=True,
                raise_for_status=False,
                read_bufsize=2**18,
            )
        return self._session

    @property
    def acquired_connections(self) -> int:
        """Connections currently checked out of the pool (0 when idle); for tests."""
        session = self._session
        if session is None or session.closed:
            return 0
        connector = session.connector
        acquired = getattr(connector, "_acquired", ())
        return len(acquired)

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float | None = -1.0
    ) -> RawResponse:
        """Send one POST and return the full response; raise a ``TransportError`` on failure.

        ``timeout`` bounds the whole attempt (default: the transport's ``total_timeout``).
        """
        await self._burst.wait()
        session = self._open()
        phase = _Phase()
        token = _current_phase.set(phase)
        total = self._total_timeout if timeout is not None and timeout < 0 else timeout
        # aiohttp's own per-request timer, not a cancel scope: an anyio scope per attempt
        # cost ~20% of the CPU of a small request. It spans the pool wait, the connect, the
        # send and the body read, like the scope did.
        limits = (
            self._timeout if total == self._total_timeout
            else aiohttp.ClientTimeout(total=total, sock_connect=self._connect_timeout)
        )
        try:
            if self._pool_timeout is not None:
                return await self._post_with_pool_deadline(
                    session, url, headers, body, phase, limits
                )
            return await self._send(session, url, headers, body, phase, limits)
        except TimeoutError as exc:
            raise _timeout_for(phase, total) from exc
        except aiohttp.ClientError as exc:
            raise _translate(exc, phase) from exc
        except OSError as exc:  # e.g. a socket error outside aiohttp's wrappers
            raise ConnectError(f"network error: {exc}") from exc
        finally:
            _current_phase.reset(token)

    async def _post_with_pool_deadline(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        phase: _Phase,
        limits: aiohttp.ClientTimeout,
    ) -> RawResponse:
        # Only the pool wait is bounded by pool_timeout; checked via the phase marker.
        result: RawResponse | None = None
        async with anyio.create_task_group() as tg:

            async def watchdog() -> None:
                await anyio.sleep(self._pool_timeout or 0)
                if phase.stage == "pool":
                    tg.cancel_scope.cancel()

            tg.start_soon(watchdog)
            result = await self._send(session, url, headers, body, phase, limits)
            tg.cancel_scope.cancel()
        if result is None:
            raise PoolTimeout(f"no free connection within {self._pool_timeout}s")
        return result

    async def _send(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        phase: _Phase,
        limits: aiohttp.ClientTimeout,
    ) -> RawResponse:
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=limits,
        ) as resp:
            phase.stage = "sent"
            size = resp.content_length
            data: bytes | bytearray
            # Without a Content-Length (chunked, as Gemini answers over HTTP/1.1) a 200 body
            # still arriving may be large: it is paced like one.
            if self.pacer.is_large(size) or (
                size is None and resp.status == 200 and not resp.content.is_eof()
            ):
                # Stop reading this socket while the body waits for a reader slot: a burst
                # of answers otherwise fills every connection's buffer (2 x 256 KiB each)
                # in the same few loop iterations, the largest loop-lag spikes measured.
                # The kernel and TCP flow control hold the rest meanwhile.
                protocol = resp.connection.protocol if resp.connection is not None else None
                if protocol is not None:
                    protocol.pause_reading()
                async with self.pacer.reading():
                    if protocol is not None:
                        protocol.resume_reading()
                    if resp.status != 200:
                        data = await resp.read()
                    elif size is not None and _identity(resp):
                        data = await _read_into(resp.content, size)
                    else:
                        data = await _read_growing(resp.content)
            else:
                data = await resp.read()
            return RawResponse(
                status=resp.status,
                reason=resp.reason or "",
                headers=resp.headers,
                body=data,
            )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            with anyio.CancelScope(shield=True):
                await session.close()


def _identity(resp: aiohttp.ClientResponse) -> bool:
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    return encoding in ("", "identity")


_new_bytearray: Callable[[None, int], bytearray] | None = None


def _uninitialized_bytearray(size: int) -> bytearray:
    """A bytearray of ``size`` bytes that the caller overwrites completely.

    ``bytearray(size)`` zero-fills first: ~0.1 ms per MB, 9 % of a 4 MB answer's CPU.
    CPython's ``PyByteArray_FromStringAndSize(NULL, size)`` leaves the bytes as allocated
    (its implementation since forever, though documented only for ``bytes``); elsewhere
    (no ``ctypes.pythonapi``) the zero-filled one is used.
    """
    global _new_bytearray
    if _new_bytearray is None:
        try:
            import ctypes

            fn = ctypes.pythonapi.PyByteArray_FromStringAndSize
            fn.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]
            fn.restype = ctypes.py_object
            _new_bytearray = fn
        except (ImportError, AttributeError):  # not CPython
            _new_bytearray = lambda _none, n: bytearray(n)  # noqa: E731
    return _new_bytearray(None, size)


async def _read_into(stream: aiohttp.StreamReader, size: int) -> bytearray:
    """Read a body of known ``size`` into one buffer, chunk by chunk.

    ``ClientResponse.read()`` keeps the parser's chunks and joins them twice (per wake-up,
    then overall): two more copies of a multi-MB body, each into freshly faulted pages.
    Copying each chunk into place as it arrives frees it at once, so the allocator hands
    the same memory to the next one (measured: 2 MB answers 3.5 -> 2.9 ms of CPU each,
    page faults 450 -> 25).
    """
    buf = _uninitialized_bytearray(size)
    pos = 0
    with memoryview(buf) as view:
        while chunk := await _next_chunk(stream):
            end = pos + len(chunk)
            if end > size:
                raise aiohttp.ClientPayloadError(f"body longer than its Content-Length {size}")
            view[pos:end] = chunk
            pos = end
    if pos != size:
        raise aiohttp.ClientPayloadError(f"body of {pos} bytes, Content-Length {size}")
    return buf


async def _read_growing(stream: aiohttp.StreamReader) -> bytearray:
    """A body of unknown decoded size (chunked, gzip): appended to one growing buffer.

    One copy of each chunk, where ``ClientResponse.read()`` makes two.
    """
    buf = bytearray()
    while chunk := await _next_chunk(stream):
        buf += chunk
    return buf


async def _next_chunk(stream: aiohttp.StreamReader) -> bytes:
    """The next piece of the body as the parser handed it over (no join); ``b""`` at the end."""
    while True:
        chunk, end_of_http_chunk = await stream.readchunk()
        if chunk or not end_of_http_chunk:  # an empty chunk-end marker is not the end
            return chunk


def _timeout_for(phase: _Phase, total: float | None) -> TransportError:
    if phase.stage == "pool":
        return PoolTimeout(f"no free connection within the {total}s attempt timeout")
    if phase.stage == "connect":
        return ConnectTimeout(f"connecting took longer than the {total}s attempt timeout")
    return ReadTimeout(f"no complete response within the {total}s attempt timeout")


def _translate(exc: aiohttp.ClientError, phase: _Phase) -> TransportError:
    # Order matters: several aiohttp classes inherit from each other.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout(f"connect timeout: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}")
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return ReadTimeout(f"read timeout: {exc}")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        if phase.stage != "sent":
            return ConnectError(f"connection closed before the request was sent: {exc}")
        return ConnectionDroppedError(f"connection closed before a complete response: {exc}")
    if isinstance(exc, aiohttp.ClientOSError):
        if phase.stage != "sent":
            return ConnectError(f"network error before sending: {exc}")
        return ConnectionDroppedError(f"network error after sending: {exc}")
    if phase.stage != "sent":
        return ConnectError(f"{type(exc).__name__}: {exc}")
    return ConnectionDroppedError(f"{type(exc).__name__}: {exc}")
