"""HTTP transports: the public ``AsyncTransport`` seam and the default aiohttp one.

Only ``_aiohttp`` imports aiohttp. Every aiohttp failure is translated into the cometgen tree
once, there (``translate``), by the phase it happened in.
"""

from .._exceptions import ConfigError
from ._aiohttp import (
    PHASES,
    TRANSLATION,
    AiohttpTransport,
    Phase,
    Verify,
    ssl_option,
    timeout_error,
    translate,
)
from ._protocol import AsyncTransport, TransportRequest, TransportResponse

__all__ = [
    "PHASES",
    "TRANSLATION",
    "AiohttpTransport",
    "AsyncTransport",
    "Phase",
    "TransportRequest",
    "TransportResponse",
    "Verify",
    "make_transport",
    "ssl_option",
    "timeout_error",
    "translate",
]


def make_transport(
    transport: AsyncTransport | None,
    *,
    max_connections: int,
    proxy: str | None,
    verify: Verify,
) -> AsyncTransport:
    """``AsyncClient``'s transport: the one given, else an ``AiohttpTransport``."""
    if transport is None:
        return AiohttpTransport(max_connections=max_connections, proxy=proxy, verify=verify)
    if proxy is not None or verify is not True:
        raise ConfigError("proxy= and verify= configure the default transport; with "
                          "transport=..., configure that transport instead")
    if not isinstance(transport, AsyncTransport):
        raise ConfigError(f"transport must have async send(request) and aclose(), got "
                          f"{type(transport).__name__}")
    return transport
