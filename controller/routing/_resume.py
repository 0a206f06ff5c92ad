"""Where a stream cut after it reached the client is continued: the search over the request's
remaining targets, the cut one last (what is sent and how the answer is spliced:
:mod:`controller.routing._continue`).

A target is passed over when it is out of rotation (unless the plan is in panic), or cannot
take the request: not of the client's own format while the request holds what a translation
would lose, or lacking something the request uses. A target that refuses the prefill (a 400)
is asked again with a restart; a target that fails is passed over. The search ends at the
request's deadline or its last attempt. Internal to :mod:`controller.routing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller._errors import CallerError, ProviderError
from controller.events import AttemptReason
from controller.model import Request
from controller.providers.base import Provider
from controller.routing._continue import Overlap, continuation_request, one_answer, prefills
from controller.routing._records import Route, Try
from controller.routing.plan import in_rotation

if TYPE_CHECKING:
    from controller.routing._stream import Opened
    from controller.routing.router import Router

__all__ = ["resume", "takes_prefill"]


async def resume(
    router: Router, route: Route, request: Request, cut: Try, error: ProviderError, delivered: str
) -> tuple[Opened, Overlap] | None:
    """A stream of ``request`` that continues ``delivered`` (the text a stream cut by
    ``error`` got to the client), on the next target that can take it, the cut one last;
    None when none can before the deadline or the attempts run out."""
    capability, source = router._capability, request.source
    if not one_answer(request):
        return None
    translatable = capability.translatable(request)
    queue, state = route.queue, router.state.current
    order = [(i, t) for i, t in enumerate(queue) if i > route.position]
    order.append((route.position, cut.target))
    for index, target in order:
        if not route.plan.panic and not in_rotation(state, target.provider, target.model):
            continue
        own = source is not None and capability.own(source.format, target)
        if not (own or translatable) or capability.missing(request, target):
            continue
        provider = router.providers[target.provider]
        decoded = capability.decoded_for(request, target)
        prefill = prefills(decoded, provider.wire_format, takes_prefill(provider))
        base = request if own else decoded
        while True:
            if (
                route.attempts >= router._max_attempts
                or router._clock.monotonic() >= route.deadline
            ):
                return None
            again, pending = continuation_request(base, delivered, prefill, own=own)
            attempt = router._try(
                route, target, AttemptReason.CONTINUATION, cut.target.provider, error.error_type
            )
            route.position = index
            try:
                opened = await router._open(route, again, attempt)
            except CallerError:
                if not prefill:
                    break
                prefill = False  # the prefill refused (400): the same target, restarted
                continue
            except ProviderError as exc:
                route.errors.append(exc)
                break
            return opened, Overlap(pending, prefilled=prefill, delivered=delivered)
    return None


def takes_prefill(provider: Provider) -> bool:
    """Whether ``provider`` continues an answer from an assistant prefill (its config says,
    by kind unless set: a provider built in code says nothing and is taken not to)."""
    return bool(getattr(provider, "takes_prefill", False))
