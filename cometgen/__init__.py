"""cometgen: bulk, asyncio-first image generation with Gemini image models via CometAPI."""

from ._exceptions import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    CometgenError,
    ConfigError,
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    DecodeError,
    GenerationError,
    ImageSafetyError,
    InputError,
    NoImageError,
    NotFoundError,
    PermissionDeniedError,
    PoolTimeout,
    PromptBlockedError,
    QuotaExhaustedError,
    RateLimitError,
    ReadTimeout,
    ServerError,
    TimeoutException,
    TransportError,
)
from ._version import __version__

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "CometgenError",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDroppedError",
    "DecodeError",
    "GenerationError",
    "ImageSafetyError",
    "InputError",
    "NoImageError",
    "NotFoundError",
    "PermissionDeniedError",
    "PoolTimeout",
    "PromptBlockedError",
    "QuotaExhaustedError",
    "RateLimitError",
    "ReadTimeout",
    "ServerError",
    "TimeoutException",
    "TransportError",
    "__version__",
]

# Make public classes report their public module, as httpx does.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("cometgen._"):
        _obj.__module__ = "cometgen"
del _name, _obj
