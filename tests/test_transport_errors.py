"""The translation table, cell by cell: aiohttp exception class x phase -> cometgen class.

Each row of ``TRANSLATION`` must appear here with its expected classes written out, so a
change to the table is a visible change to this grid. Pure function, no sockets: the phases
themselves are exercised over real HTTP in test_transport.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from cometgen._exceptions import (
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    TransportError,
)
from cometgen._transport import PHASES, TRANSLATION, timeout_error, translate

KEY = SimpleNamespace(host="example.test", port=443, ssl=True)
INFO = aiohttp.RequestInfo(URL("http://example.test/v1"), "POST",
                           CIMultiDictProxy(CIMultiDict()), URL("http://example.test/v1"))

#: One instance of each table row's class.
SAMPLES: dict[type[BaseException], BaseException] = {
    aiohttp.ServerTimeoutError: aiohttp.ServerTimeoutError("timeout"),
    TimeoutError: TimeoutError(),
    aiohttp.ClientConnectorError: aiohttp.ClientConnectorError(KEY, OSError(111, "refused")),  # type: ignore[arg-type]
    aiohttp.ServerDisconnectedError: aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError: aiohttp.ClientPayloadError("response payload is not completed"),
    aiohttp.ClientResponseError: aiohttp.ClientResponseError(INFO, (), status=400,
                                                             message="bad status line"),
    aiohttp.ClientOSError: aiohttp.ClientOSError(104, "connection reset by peer"),
    aiohttp.ClientError: aiohttp.ClientError("something else"),
    OSError: OSError(104, "connection reset by peer"),
}

N, D = ConnectError, ConnectionDroppedError
#: The expected grid: class -> (pool, connect, sent).
EXPECTED: dict[type[BaseException], tuple[type[TransportError], ...]] = {
    aiohttp.ServerTimeoutError: (PoolTimeout, ConnectTimeout, ReadTimeout),
    TimeoutError: (PoolTimeout, ConnectTimeout, ReadTimeout),
    aiohttp.ClientConnectorError: (N, N, N),
    aiohttp.ServerDisconnectedError: (N, N, D),
    aiohttp.ClientPayloadError: (N, N, D),
    aiohttp.ClientResponseError: (N, N, D),
    aiohttp.ClientOSError: (N, N, D),
    aiohttp.ClientError: (N, N, D),
    OSError: (N, N, D),  # issue 15 bug 5: an OSError after sending is not "not sent"
}

CELLS = [(cls, i, phase) for cls in EXPECTED for i, phase in enumerate(PHASES)]


def test_the_grid_covers_the_table() -> None:
    assert set(EXPECTED) == set(TRANSLATION) == set(SAMPLES)


@pytest.mark.parametrize(("cls", "index", "phase"), CELLS,
                         ids=[f"{c.__name__}-{p}" for c, _, p in CELLS])
def test_cell(cls: type[BaseException], index: int, phase: str) -> None:
    error = translate(SAMPLES[cls], phase)  # type: ignore[arg-type]
    expected = EXPECTED[cls][index]
    assert type(error) is expected
    # Before a connection is held nothing was sent; after, the outcome is unknown.
    assert error.delivery == ("ambiguous" if phase == "sent" and expected is not N
                              else "not_sent")
    assert type(SAMPLES[cls]).__name__ in str(error)


@pytest.mark.parametrize(
    ("exc", "row"),
    [
        (aiohttp.ClientProxyConnectionError(KEY, OSError(111, "refused")),  # type: ignore[arg-type]
         aiohttp.ClientConnectorError),
        (aiohttp.ClientHttpProxyError(INFO, (), status=407), aiohttp.ClientResponseError),
        (aiohttp.InvalidURL("nota url"), aiohttp.ClientError),
        (ConnectionResetError(104, "reset"), OSError),
        (aiohttp.ClientConnectionError("closed"), aiohttp.ClientError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
@pytest.mark.parametrize("phase", PHASES)
def test_subclasses_take_their_parents_row(exc: BaseException, row: type[BaseException],
                                           phase: str) -> None:
    error = translate(exc, phase)  # type: ignore[arg-type]
    assert type(error) is EXPECTED[row][PHASES.index(phase)]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["ConnectionTimeoutError", "SocketTimeoutError",
                                  "ClientConnectionResetError", "ClientConnectorDNSError"])
def test_newer_aiohttp_classes_are_covered(name: str) -> None:
    cls = getattr(aiohttp, name, None)
    if cls is None:  # older aiohttp (the floor): the class does not exist, nothing to map
        return
    assert any(base in TRANSLATION for base in cls.__mro__)


@pytest.mark.parametrize("exc", [ValueError("bug"), RuntimeError("Session is closed"),
                                 asyncio.CancelledError(), KeyboardInterrupt()])
def test_non_transport_errors_are_not_translated(exc: BaseException) -> None:
    assert all(translate(exc, phase) is None for phase in PHASES)


@pytest.mark.parametrize(("phase", "cls"), [("pool", PoolTimeout), ("connect", ConnectTimeout),
                                            ("sent", ReadTimeout)])
def test_own_deadlines_by_phase(phase: str, cls: type[TransportError]) -> None:
    error = timeout_error(phase, 2.0)  # type: ignore[arg-type]
    assert type(error) is cls and "2.0s" in str(error)
