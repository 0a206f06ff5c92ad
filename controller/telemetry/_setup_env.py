"""What the environment asks of telemetry: the standard ``OTEL_*`` variables read from a mapping.

The OTLP endpoint and headers per signal, the exporter's options (compression, TLS files,
timeout), the head sampler, the resource, and whether spans must take the SDK's path rather
than the light one (:mod:`controller.telemetry.setup` assembles them). A value we do not know is
logged and a default used; endpoints and headers can carry credentials and are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies, proxy_bypass

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.util.re import parse_env_headers

# the logger these warnings have always had (before the split of setup.py): users filter on it
log = logging.getLogger("controller.telemetry.setup")

Signal = Literal["traces", "metrics"]


# --- configuration from the environment -------------------------------------------------------
def otlp_endpoint(env: Mapping[str, str], *, signal: Signal) -> str | None:
    """The OTLP/HTTP URL for ``signal``, or None when export of that signal is not asked for.

    Follows the OTel spec: ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` is used as is; otherwise
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` plus ``/v1/<signal>``. ``OTEL_SDK_DISABLED=true`` or
    ``OTEL_<SIGNAL>_EXPORTER=none`` turn it off. Unlike the SDK, no localhost default is assumed:
    without a configured collector nothing is exported.
    """
    upper = signal.upper()
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get(f"OTEL_{upper}_EXPORTER", "").strip().lower() == "none":
        return None
    specific = env.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", "").strip()
    if specific:
        return specific
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/{signal}" if base else None


def _otlp_headers(env: Mapping[str, str], signal: Signal) -> dict[str, str]:
    raw = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS") or env.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    return dict(parse_env_headers(raw, liberal=True))


def env_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    value = int(raw) if raw.isdigit() else 0
    if raw and value <= 0:
        log.warning("ignoring %s=%r: expected a positive integer; using %d", key, raw, default)
    return value if value > 0 else default


def _parent_based_ratio(ratio: float) -> Sampler:
    return ParentBased(TraceIdRatioBased(ratio))


_RATIO_SAMPLERS: Mapping[str, Callable[[float], Sampler]] = {
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": _parent_based_ratio,
}
_FIXED_SAMPLERS: Mapping[str, Sampler] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": ParentBased(ALWAYS_ON),
    "parentbased_always_off": ParentBased(ALWAYS_OFF),
}


def sampler_from(env: Mapping[str, str]) -> Sampler:
    """The head sampler from the standard ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``
    (default ``parentbased_always_on``). Every traced request costs CPU (three spans, exported
    from a thread on the same core), so a busy gateway may want e.g.
    ``parentbased_traceidratio`` with ``0.1``; metrics and the tripwire see every request
    whatever the sampler. A value we do not know is logged and the default used."""
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[name]
    if name in _RATIO_SAMPLERS:
        raw = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        try:
            ratio = float(raw) if raw else 1.0
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            log.warning("ignoring OTEL_TRACES_SAMPLER_ARG=%r: expected 0..1; using 1.0", raw)
            ratio = 1.0
        return _RATIO_SAMPLERS[name](ratio)
    known = ", ".join([*_FIXED_SAMPLERS, *_RATIO_SAMPLERS])
    log.warning("ignoring OTEL_TRACES_SAMPLER=%r (known: %s); sampling every trace", name, known)
    return _FIXED_SAMPLERS["parentbased_always_on"]


def resource_from(env: Mapping[str, str], service_name: str) -> Resource:
    """The SDK's resource (``telemetry.sdk.*``, ``OTEL_RESOURCE_ATTRIBUTES``), read from ``env``
    as well as ``os.environ``, with ``OTEL_SERVICE_NAME`` over ``telemetry.service_name``."""
    attributes: dict[str, str] = {}
    raw = env.get("OTEL_RESOURCE_ATTRIBUTES", "").strip()
    if raw:
        for pair in raw.split(","):
            key, sep, value = pair.partition("=")
            if sep and key.strip():
                attributes[key.strip()] = unquote(value.strip())
    attributes[SERVICE_NAME] = env.get("OTEL_SERVICE_NAME", "").strip() or service_name
    return Resource.create(attributes)


# --- the light span path --------------------------------------------------------------------------
_SPAN_LIMIT_VARIABLES = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)
SDK_SPANS_VARIABLE = "FAILOVER_TELEMETRY_SDK_SPANS"


def sdk_spans_wanted(env: Mapping[str, str]) -> bool:
    """The SDK's span path: asked for, or needed for span limits the light path does not apply
    (it keeps the SDK's defaults only)."""
    if env.get(SDK_SPANS_VARIABLE, "").strip().lower() in ("1", "true", "yes"):
        return True
    return any(env.get(name, "").strip() for name in _SPAN_LIMIT_VARIABLES)


CREDENTIAL_PROVIDER = "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER"


def proxied(url: str) -> bool:
    """Whether ``requests`` (the SDK's client) would reach ``url`` through a proxy from the
    environment (``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY``, less ``NO_PROXY``)."""
    parts = urlsplit(url)
    proxies = getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not proxy_bypass(parts.hostname or "")


# --- exporter options from the environment --------------------------------------------------------
def exporter_options(env: Mapping[str, str], signal: Signal, timeout: float) -> dict[str, Any]:
    """What the SDK's OTLP/HTTP exporter reads from ``os.environ``, read from ``env`` instead
    (the runtime's environment; the same mapping in production): headers, compression, TLS
    files. The protocol is always http/protobuf (the one this build ships)."""
    upper = signal.upper()

    def pick(name: str) -> str | None:
        value = env.get(f"OTEL_EXPORTER_OTLP_{upper}_{name}") or env.get(
            f"OTEL_EXPORTER_OTLP_{name}"
        )
        return value.strip() if value and value.strip() else None

    protocol = pick("PROTOCOL")
    if protocol is not None and protocol.lower() != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%r for %s: only http/protobuf is available here;"
            " sending http/protobuf",
            protocol,
            signal,
        )
    compression = Compression.NoCompression
    raw = pick("COMPRESSION")
    if raw is not None:
        try:
            compression = Compression(raw.lower())
        except ValueError:
            log.warning("ignoring OTEL_EXPORTER_OTLP_COMPRESSION=%r (gzip, deflate, none)", raw)
    return {
        "headers": _otlp_headers(env, signal),
        "timeout": timeout,
        "compression": compression,
        "certificate_file": pick("CERTIFICATE"),
        "client_key_file": pick("CLIENT_KEY"),
        "client_certificate_file": pick("CLIENT_CERTIFICATE"),
    }


def export_timeout_from(env: Mapping[str, str], signal: Signal, default: float) -> float:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`` or ``OTEL_EXPORTER_OTLP_TIMEOUT`` in seconds, as
    the SDK's OTLP/HTTP exporter reads them; else ``default`` (shorter than the SDK's 10 s, so
    a dead collector does not hold a shutdown)."""
    key = f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT"
    raw = (env.get(key) or env.get("OTEL_EXPORTER_OTLP_TIMEOUT") or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        log.warning("ignoring OTLP export timeout %r: expected positive seconds", raw)
        return default
    return value
