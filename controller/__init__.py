"""llm-failover: route LLM requests across providers with failover, OpenTelemetry on every
call, an error-rate tripwire, phone alerts and a kill switch.

The stable public surface is re-exported here (``tests/test_exported_members.py`` keeps
``__all__`` and reality in step); everything in modules whose name starts with ``_`` is private.
"""

from controller._clock import Clock, FakeClock, SystemClock
from controller._errors import (
    AllProvidersFailed,
    AuthFailed,
    BadRequest,
    CallerError,
    ConfigError,
    ConnectionFailed,
    ContentFiltered,
    ContextTooLong,
    DeadlineExceeded,
    FailoverError,
    MalformedResponse,
    ModelNotFound,
    Overloaded,
    ProviderError,
    ProviderFault,
    ProviderTimeout,
    RateLimited,
    ResponseTooLarge,
    StreamInterrupted,
)
from controller.config import Config, load_config, parse_config
from controller.control.state import HealthState, KillSwitch, RoutingState, StateHolder
from controller.events import AttemptEvent, Listener, Outcome, RouteEvent
from controller.model import (
    DocumentPart,
    FinishReason,
    ImagePart,
    Message,
    Request,
    Response,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
    Usage,
)
from controller.providers import HttpProvider, Provider, Timeouts, codec_for
from controller.routing.plan import Strategy, Target, TierPlan
from controller.routing.router import RoutedStream, Router
from controller.runtime import Runtime

__version__ = "0.1.0"

__all__ = [
    "AllProvidersFailed",
    "AttemptEvent",
    "AuthFailed",
    "BadRequest",
    "CallerError",
    "Clock",
    "Config",
    "ConfigError",
    "ConnectionFailed",
    "ContentFiltered",
    "ContextTooLong",
    "DeadlineExceeded",
    "DocumentPart",
    "FailoverError",
    "FakeClock",
    "FinishReason",
    "HealthState",
    "HttpProvider",
    "ImagePart",
    "KillSwitch",
    "Listener",
    "MalformedResponse",
    "Message",
    "ModelNotFound",
    "Outcome",
    "Overloaded",
    "Provider",
    "ProviderError",
    "ProviderFault",
    "ProviderTimeout",
    "RateLimited",
    "Request",
    "Response",
    "ResponseTooLarge",
    "RouteEvent",
    "RoutedStream",
    "Router",
    "RoutingState",
    "Runtime",
    "StateHolder",
    "Strategy",
    "StreamChunk",
    "StreamInterrupted",
    "SystemClock",
    "Target",
    "TextPart",
    "TierPlan",
    "Timeouts",
    "ToolCall",
    "ToolCallDelta",
    "ToolDefinition",
    "Usage",
    "__version__",
    "codec_for",
    "load_config",
    "parse_config",
]
