"""cometgen: bulk, asyncio-first image generation with Gemini image models via CometAPI."""

from msgspec import Struct as _Struct

from ._bulk._batch import Batch
from ._bulk._input import iter_input
from ._bulk._job import Job
from ._bulk._manifest import FileRecord, ManifestRecord
from ._bulk._merge import MergeReport, merge_outputs
from ._bulk._metadata import write_metadata_jsonl
from ._bulk._outcomes import Blocked, Done, Failed, NoImage, Outcome
from ._bulk._pricing import PriceTable, load_prices
from ._bulk._stats import BatchStats
from ._cache import ImageCache
from ._chat import AsyncChat
from ._client import AsyncClient
from ._config import Limits, Timeouts
from ._exceptions import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    CometgenError,
    ConfigError,
    ConnectError,
    ConnectionDroppedError,
    ConnectTimeout,
    DecodeError,
    GenerationError,
    ImageSafetyError,
    InputError,
    LimiterBackendError,
    MergeConflictError,
    NoImageError,
    NotFoundError,
    OutputLockedError,
    PermissionDeniedError,
    PoolTimeout,
    PromptBlockedError,
    QuotaExhaustedError,
    RateLimitError,
    ReadTimeout,
    ServerError,
    TimeoutException,
    TransportError,
    WrongEventLoopError,
)
from ._hooks import RequestEvent, ResponseEvent
from ._image import Image
from ._limits import Limiter, LimiterStats, RateLimiter, Slot
from ._models import ModelRegistry, ModelSpec, load_models, use_models
from ._redis_limits import RedisLimiter
from ._result import GenerateResult, Usage
from ._retry import RetryPolicy
from ._sync import generate
from ._sync_client import Chat, Client
from ._transport import AiohttpTransport, AsyncTransport, TransportRequest, TransportResponse
from ._version import __version__

__all__ = [
    "APIStatusError",
    "AiohttpTransport",
    "AsyncChat",
    "AsyncClient",
    "AsyncTransport",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchStats",
    "Blocked",
    "Chat",
    "Client",
    "ClientClosedError",
    "CometgenError",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDroppedError",
    "DecodeError",
    "Done",
    "Failed",
    "FileRecord",
    "GenerateResult",
    "GenerationError",
    "Image",
    "ImageCache",
    "ImageSafetyError",
    "InputError",
    "Job",
    "Limiter",
    "LimiterBackendError",
    "LimiterStats",
    "Limits",
    "ManifestRecord",
    "MergeConflictError",
    "MergeReport",
    "ModelRegistry",
    "ModelSpec",
    "NoImage",
    "NoImageError",
    "NotFoundError",
    "Outcome",
    "OutputLockedError",
    "PermissionDeniedError",
    "PoolTimeout",
    "PriceTable",
    "PromptBlockedError",
    "QuotaExhaustedError",
    "RateLimitError",
    "RateLimiter",
    "ReadTimeout",
    "RedisLimiter",
    "RequestEvent",
    "ResponseEvent",
    "RetryPolicy",
    "ServerError",
    "Slot",
    "TimeoutException",
    "Timeouts",
    "TransportError",
    "TransportRequest",
    "TransportResponse",
    "Usage",
    "WrongEventLoopError",
    "__version__",
    "generate",
    "iter_input",
    "load_models",
    "load_prices",
    "merge_outputs",
    "use_models",
    "write_metadata_jsonl",
]

# Make public classes report their public module, as httpx does.
# msgspec Structs keep their module: msgspec resolves their annotations there.
for _name in __all__:
    _obj = globals()[_name]
    if (
        isinstance(_obj, type | type(generate))
        and _obj.__module__.startswith("cometgen._")
        and not (isinstance(_obj, type) and issubclass(_obj, _Struct))
    ):
        _obj.__module__ = "cometgen"
del _name, _obj
