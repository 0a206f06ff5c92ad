"""Which targets can honour a client's request, and what one serves it without.

A target whose provider speaks the client's format gets the body as it came and honours all
of it, but what its model lacks (``targets[].lacks``). Any other target gets the translation:
what that cannot carry (noted by the server codec while decoding), what the provider's format
cannot express (``Provider.unsupported``) and reasoning for a model that does not reason are
lost there. The router skips a target that would lose something, unless the config lets it
be dropped (``translation.droppable``); what was dropped is counted and logged once. Internal
to :mod:`controller.routing`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from controller._errors import AllProvidersFailed, BadRequest
from controller.model import ImagePart, Request, Source, Untranslatable
from controller.providers.base import Provider
from controller.routing.plan import Target, TierPlan
from controller.wire._media import media_of
from controller.wire._reasoning import NONE, reasons

if TYPE_CHECKING:
    from controller.control.state import StateHolder
    from controller.routing._records import Route

__all__ = ["Capability", "unsupported"]

log = logging.getLogger("controller.routing.router")  # where operators have seen it since


class Capability:
    """What each target can honour of a request, for one router."""

    def __init__(self, providers: Mapping[str, Provider], droppable: frozenset[str]) -> None:
        self.providers = providers
        self.droppable = droppable
        self._drops_logged: set[str] = set()

    def missing(self, request: Request, target: Target) -> list[Untranslatable]:
        """What the client sent that ``target`` cannot honour, less what the config allows
        to drop (:meth:`lost`)."""
        # What the model lacks is never dropped: nothing takes it out of the request.
        return [
            u
            for u in self.lost(request, target)
            if u.feature not in self.droppable or u.feature in target.lacks
        ]

    def lost(self, request: Request, target: Target) -> tuple[Untranslatable, ...]:
        """What of the client's request ``target`` would not get: what its model lacks (from
        the config, whatever the format); nothing more when its provider speaks the client's
        format (the body goes on as it came); else what the translation cannot carry, what the
        provider's format cannot express, and reasoning for a model that does not reason."""
        request = _full(request)
        source = request.source
        provider = self.providers[target.provider]
        lacking = _lacking(request, target.lacks) if target.lacks else ()
        if source is None or provider.wire_format == source.format:
            return lacking
        lost = (*lacking, *source.untranslatable, *provider.unsupported(request))
        thinks = request.reasoning is not None and request.reasoning.effort != NONE
        if thinks and not _reasons(target, provider.wire_format):
            lost = (*lost, _REASONING)
        return lost

    def request_for(self, request: Request, target: Target) -> Request:
        """``request`` as ``target`` gets it: without reasoning parameters for a model that
        does not take them (it was not skipped, so the config lets the gateway drop them)."""
        source = request.source
        if source is None or self.own(source.format, target):
            return request
        return self.decoded_for(request, target)  # another format gets the translation

    def translatable(self, request: Request) -> bool:
        """Whether a translation of ``request`` loses nothing the config does not let it drop
        (what a continuation needs: it is always made from the decoded request)."""
        source = _full(request).source
        return source is None or all(u.feature in self.droppable for u in source.untranslatable)

    def decoded_for(self, request: Request, target: Target) -> Request:
        """``request`` decoded, as a provider of another format than the client's would get it
        on ``target`` (reasoning parameters dropped for a model that does not take them)."""
        request = _full(request)
        if request.reasoning is None:
            return request
        if _reasons(target, self.providers[target.provider].wire_format):
            return request
        return replace(request, reasoning=None)

    def own(self, wire_format: str, target: Target) -> bool:
        """Whether ``target`` takes a client's request of ``wire_format`` as it came, with
        nothing it lacks."""
        return not target.lacks and self.providers[target.provider].wire_format == wire_format

    def dropped(self, request: Request, target: Target) -> tuple[str, ...]:
        """The droppable features ``target`` served without; each logged once."""
        source = request.source
        if not self.droppable or source is None or self.own(source.format, target):
            return ()  # nothing may be dropped: a target that would lose something was skipped
        lost = self.lost(request, target)
        if not lost:
            return ()
        provider = self.providers[target.provider]
        dropped = tuple(dict.fromkeys(u.feature for u in lost))
        for feature in dropped:
            if feature not in self._drops_logged:
                self._drops_logged.add(feature)
                log.warning(
                    "'%s' sent by a client in the %s format was dropped on the way to %s "
                    "(%s format), as translation.droppable allows (logged once; counted in %s)",
                    feature,
                    source.format,
                    provider.name,
                    provider.wire_format,
                    "failover.features.dropped",
                )
        return dropped

    def capable(
        self,
        route: Route,
        request: Request,
        targets: list[Target],
        tier: TierPlan,
        state: StateHolder,
    ) -> list[Target]:
        """``targets`` (of ``tier``) without those that cannot honour the request (noted on the
        route). None left: a 400 naming the field when no target of the tier could honour it;
        else the capable ones are out of the plan, and are tried anyway (panic) unless the kill
        switch rules them all out (no capacity)."""
        source = request.source
        if source is None or all(self.own(source.format, t) for t in targets):
            return targets  # the usual case: each target gets the body as it came
        kept: list[Target] = []
        for target in targets:
            missing = self.missing(request, target)
            if missing:
                features = ", ".join(dict.fromkeys(u.feature for u in missing))
                route.skipped.append(f"{target.provider}: {features}")
            else:
                kept.append(target)
        if kept or not targets:
            return kept
        everyone = [*tier.targets, *((tier.context_fallback,) if tier.context_fallback else ())]
        everyone = [t for t in everyone if t.provider in self.providers]
        able = [t for t in everyone if not self.missing(request, t)]
        if not able:
            providers = [self.providers[t.provider] for t in everyone]
            raise unsupported(source, self.missing(request, everyone[0]), tier.name, providers)
        # The ones that can honour it are all out of rotation: for this request, panic among
        # them (as a tier whose every provider is tripped does), the kill switch still applies.
        switch = state.current.kill_switch
        allowed = [t for t in able if switch.allows(t.provider)]
        if not allowed:
            raise AllProvidersFailed(
                f"no provider that can honour this request may serve tier {tier.name} now "
                f"(kill switch: {switch.describe()}); passed over: {'; '.join(route.skipped)}"
            )
        route.plan = replace(route.plan, targets=tuple(allowed), panic=True)
        return allowed


_REASONING = Untranslatable("reasoning", "reasoning")


def _full(request: Request) -> Request:
    """``request`` decoded, where the gateway left that until needed (:meth:`takes_as_is`)."""
    source = request.source
    return source.full() if source is not None and source.full is not None else request


def _lacking(request: Request, lacks: frozenset[str]) -> tuple[Untranslatable, ...]:
    """Which of the capabilities a model ``lacks`` the request uses."""
    used = {"tools": bool(request.tools), "response_format": request.response_format is not None}
    if {"image", "document"} & lacks:
        for part in media_of(request.messages):
            used["image" if isinstance(part, ImagePart) else "document"] = True
    return tuple(Untranslatable(name, name) for name in sorted(lacks) if used.get(name))


def _reasons(target: Target, wire_format: str) -> bool:
    """Whether the target's model takes reasoning parameters: as configured, else by name."""
    if target.reasoning is not None:
        return target.reasoning
    return reasons(wire_format, target.model)


def unsupported(
    source: Source, missing: Sequence[Untranslatable], tier: str, providers: Sequence[Provider]
) -> BadRequest:
    """The 400 for a request no provider of its tier can honour, worded like the APIs' own
    validation errors (``Invalid 'path': ...``, which the OpenAI front reads ``param`` from)."""
    first = missing[0]
    formats = ", ".join(sorted({f"{p.name} ({p.wire_format})" for p in providers}))
    others = [u.feature for u in missing[1:]]
    also = f" (also: {', '.join(dict.fromkeys(others))})" if others else ""
    return BadRequest(
        f"Invalid '{first.path}': {first.feature} cannot be sent to any provider of tier {tier}: "
        f"only a provider of the {source.format} format honours it, and the tier has "
        f"{formats}{also}. Route this model to a tier with a {source.format} provider, or allow "
        "the gateway to drop it (translation.droppable).",
        status=400,
    )
