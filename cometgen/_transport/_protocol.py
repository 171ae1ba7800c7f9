"""The public transport seam: what ``AsyncClient(transport=...)`` accepts.

A transport sends one HTTP request and returns the whole response. It reports a failure by
raising a ``cometgen.TransportError`` subclass whose class says whether the request may have
reached the provider: ``ConnectError``/``ConnectTimeout``/``PoolTimeout`` (never sent: safe
to retry) or ``ConnectionDroppedError``/``ReadTimeout`` (maybe sent, maybe billed). The retry
policy reads only that. Any other exception propagates to the caller unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from multidict import CIMultiDict, CIMultiDictProxy

from .._config import Timeouts

__all__ = ["AsyncTransport", "TransportRequest", "TransportResponse"]


@dataclass(frozen=True, slots=True)
class TransportRequest:
    """One HTTP request, as the client hands it to a transport."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    #: This attempt's timeouts (connect, pool wait, whole attempt); honour what you can.
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True, slots=True)
class TransportResponse:
    """One whole HTTP response. ``headers`` becomes a read-only case-insensitive mapping,
    ``body`` immutable ``bytes`` (the decoder keeps views of it)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.headers, CIMultiDictProxy):
            # Header names are case-insensitive: a handler's plain dict must look up alike.
            object.__setattr__(self, "headers", CIMultiDictProxy(CIMultiDict(self.headers)))
        if type(self.body) is not bytes:
            object.__setattr__(self, "body", bytes(self.body))


@runtime_checkable
class AsyncTransport(Protocol):
    """What ``AsyncClient(transport=...)`` needs: ``send`` one request, ``aclose`` at the end.

    The client calls ``send`` concurrently from many tasks and ``aclose`` once, when it is
    closed. ``cometgen.AiohttpTransport`` is the default; ``cometgen.testing.MockTransport``
    answers in process.
    """

    async def send(self, request: TransportRequest) -> TransportResponse: ...

    async def aclose(self) -> None: ...
