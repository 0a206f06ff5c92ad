"""The exception tree. Adapters translate foreign errors into it once, at the edge.

Retry and failover decisions go by type (and the class attributes below), never by matching
message text::

    FailoverError
    ├── ConfigError                      bad config: names the key and the line
    ├── ProviderError                    one attempt at one provider failed
    │   ├── ProviderFault                the provider's fault: counts toward its error rate
    │   │   ├── RateLimited              429 (retry_after from Retry-After when given)
    │   │   ├── Overloaded               5xx, Anthropic 529
    │   │   ├── ProviderTimeout          phase: connect | first_token | idle | total
    │   │   ├── ConnectionFailed         refused / reset / closed before an answer
    │   │   ├── MalformedResponse        unparseable body or stream event, truncated stream
    │   │   │   └── MalformedEvent       one stream event not JSON: skipped, unless most are
    │   │   ├── ResponseTooLarge         an answer, event or line over the gateway's size limits
    │   │   ├── AuthFailed               401/402/403: bad key, suspended or out of credit
    │   │   └── ModelNotFound            404: the configured model or path is unknown there
    │   ├── StreamTooLong                a stream cut at our stream_total cap: not a fault
    │   ├── PoolFull                     no free connection to it in time: tried elsewhere
    │   ├── Outpaced                     abandoned: a hedge or a rescue answered first
    │   │   └── Stalled                  ... while its provider was tripped: counts as a fault
    │   └── CallerError                  the request was wrong: never retried, never failed over
    │       ├── BadRequest               400 / 404 / 422 ...
    │       │   ├── ContextTooLong       may go to a configured larger-context model
    │       │   └── ContentFiltered      refused by the provider's safety filter
    ├── StreamInterrupted                a stream failed after its first chunk was delivered
    ├── DeadlineExceeded                 the request's own deadline ran out
    └── AllProvidersFailed               every candidate failed; ``attempts`` holds each error

``error_type`` is the low-cardinality value used for the ``error.type`` span/metric attribute.
"""

from __future__ import annotations

from typing import ClassVar


class FailoverError(Exception):
    """Base of every error this package raises on purpose."""

    error_type: ClassVar[str] = "failover_error"


class ConfigError(FailoverError):
    """Invalid configuration. ``key`` is a dotted path, ``line`` 1-based when known."""

    error_type = "config"

    def __init__(self, message: str, *, key: str = "", line: int | None = None, source: str = ""):
        self.key = key
        self.line = line
        self.source = source
        where = source or "config"
        if line is not None:
            where = f"{where}:{line}"
        prefix = f"{where}: {key}: " if key else f"{where}: "
        super().__init__(prefix + message)


class ProviderError(FailoverError):
    """One attempt at one provider failed.

    ``retryable`` says whether retrying the *same* provider can help; ``counts_as_fault``
    whether the failure counts toward the provider's error rate (and so may fail over).
    """

    error_type = "provider_error"
    retryable: ClassVar[bool] = False
    counts_as_fault: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        who = "/".join(p for p in (self.provider, self.model) if p)
        code = f" (HTTP {self.status})" if self.status else ""
        return f"{who}: {self.message}{code}" if who else f"{self.message}{code}"


class StreamTooLong(ProviderError):
    """A stream still running at ``timeouts.stream_total``, cut by our own cap.

    Not a :class:`ProviderFault`: a provider that streams for ten minutes
    is answering, not failing, so the cut must not push it toward a trip (the attempt is
    reported as cancelled, with this ``error_type``). The request still ends with an in-stream
    error, never as a truncated answer presented as complete.
    """

    error_type = "stream_too_long"


class PoolFull(ProviderError):
    """Every connection to the provider stayed busy for ``timeouts.pool``: the request goes to
    its next target rather than queue behind a provider that holds them all. Not a fault by
    itself (a full pool may be plain load): the attempts holding the connections are what the
    stall detector judges."""

    error_type = "pool_full"


class Outpaced(ProviderError):
    """An attempt abandoned because another attempt of the same request answered first (a
    hedge against the slow tail). Never raised: it is what the abandoned attempt is reported
    as (cancelled, with this ``error_type``), since a slower answer is not a failure."""

    error_type = "outpaced"


class Stalled(Outpaced):
    """An attempt abandoned because its provider went out of rotation while it waited (it
    stalled, or tripped otherwise) and the attempt started elsewhere answered first. Reported
    as a fault of that provider: it had the request and did not answer it in time."""

    error_type = "stalled"
    counts_as_fault = True


class ProviderFault(ProviderError):
    """The provider failed; the caller did nothing wrong. Counts toward the tripwire."""

    error_type = "provider_fault"
    counts_as_fault = True


class RateLimited(ProviderFault):
    error_type = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider: str = "",
        model: str = "",
        status: int | None = 429,
    ) -> None:
        super().__init__(message, provider=provider, model=model, status=status)
        self.retry_after = retry_after


class Overloaded(ProviderFault):
    error_type = "overloaded"
    retryable = True


class ProviderTimeout(ProviderFault):
    """``phase`` is ``connect``, ``first_token``, ``idle`` or ``total``."""

    error_type = "timeout"

    def __init__(self, message: str, *, phase: str, provider: str = "", model: str = "") -> None:
        super().__init__(message, provider=provider, model=model)
        self.phase = phase


class ConnectionFailed(ProviderFault):
    error_type = "connection"
    retryable = True


class MalformedResponse(ProviderFault):
    error_type = "malformed_response"


class MalformedEvent(MalformedResponse):
    """One stream event whose data is not JSON. A stream skips it (counted, logged once) and goes
    on; only a stream of mostly such events fails, as :class:`MalformedResponse`."""

    error_type = "malformed_event"


class ResponseTooLarge(ProviderFault):
    """The answer broke a size limit (its body, one stream event or line, or the bytes
    compressed answers inflate to): read no further, its memory freed, failed over."""

    error_type = "response_too_large"


class AuthFailed(ProviderFault):
    """401/402/403: a bad key, a suspended account or one out of credit. Alerted as critical."""

    error_type = "auth"


class ModelNotFound(ProviderFault):
    """404: the provider does not know the configured model (retired, misspelt in the config)
    or the configured path. The caller cannot fix that and another provider can serve the
    request, so it fails over and counts against this provider like any fault."""

    error_type = "model_not_found"


class CallerError(ProviderError):
    """The request itself was wrong. Never retried, never failed over."""

    error_type = "caller_error"


class BadRequest(CallerError):
    error_type = "bad_request"


class ContextTooLong(BadRequest):
    error_type = "context_too_long"


class ContentFiltered(BadRequest):
    error_type = "content_filtered"


class StreamInterrupted(FailoverError):
    """A stream failed after chunks were delivered; the answer is incomplete.

    ``cause`` is the provider error that ended it; ``provider`` and ``model`` name the attempt.
    """

    error_type = "stream_interrupted"

    def __init__(self, cause: ProviderError, *, provider: str, model: str) -> None:
        self.cause = cause
        self.provider = provider
        self.model = model
        super().__init__(f"stream from {provider}/{model} ended early: {cause.message}")


class DeadlineExceeded(FailoverError):
    error_type = "deadline_exceeded"

    def __init__(self, message: str, *, attempts: tuple[ProviderError, ...] = ()) -> None:
        self.attempts = attempts
        super().__init__(message)


class AllProvidersFailed(FailoverError):
    """Every candidate failed (or none was usable). ``attempts`` holds each error, in order;
    ``passed_over`` the providers skipped because their format cannot honour the request
    (``"provider: feature, ..."``)."""

    error_type = "all_providers_failed"

    def __init__(
        self,
        message: str,
        *,
        attempts: tuple[ProviderError, ...] = (),
        passed_over: tuple[str, ...] = (),
    ) -> None:
        self.attempts = attempts
        self.passed_over = passed_over
        super().__init__(message)

    @property
    def last(self) -> ProviderError | None:
        return self.attempts[-1] if self.attempts else None
