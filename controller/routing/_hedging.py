"""Who starts the attempt beside a request's own, and when: rescues, hedges and warm guards.

:class:`~controller.routing._race.Race` runs an attempt and at most one companion; this module
decides when a companion starts and on which target. A *rescue* starts when the attempt's
provider leaves rotation (the router's state watch calls the waiter's ``on_trip``). A *hedge*
starts when a tier's ``hedge`` wait has passed with nothing produced, within the tier's hedge
budget. A *warm* attempt (a backup served first to keep it measured, routing._standby) always
has a guard: the primary starts beside it once it has waited the backup's own p99, so the client
does not pay for a slow backup's timeouts; a warm attempt whose tier knows no such wait yet is
not made at all (:meth:`Hedging.warm_guarded`). Internal to :mod:`controller.routing`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from controller._errors import CallerError, DeadlineExceeded, Outpaced, ProviderError, Stalled
from controller.events import AttemptReason
from controller.model import Request
from controller.routing._race import HedgeBudget, Race
from controller.routing._records import Once, Route, Try
from controller.routing._stream import RoutedStream
from controller.routing.plan import Hedge, Plan, Target, TierPlan, in_rotation

if TYPE_CHECKING:
    from controller.routing.router import Router

__all__ = ["Hedging"]

T = TypeVar("T")
# A warm attempt's guard when its tier has no hedge of its own (see Hedging._arm).
_WARM_GUARD = Hedge(quantile=0.99, per_second=1000.0, min_samples=20)


class Hedging:
    """The races of one router's attempts: a rescue or a hedge beside each, if need be."""

    def __init__(self, router: Router) -> None:
        self._router = router
        # Per tier and rate: a config reload that changes a tier's rate starts a new bucket.
        self._budgets: dict[tuple[str, float], HedgeBudget] = {}

    async def race(
        self, route: Route, request: Request, attempt: Try, once: Once[T]
    ) -> tuple[T, Target]:
        """``attempt``, with a rescue or a hedge started beside it if need be: the first to
        answer wins. Raises the last error when both fail (each is in ``route.errors``)."""
        race: Race[tuple[T, Target]] = Race(attempt.waiter)
        if not route.plan.panic:  # in panic every target is out of rotation: nowhere to go
            attempt.waiter.on_trip = lambda: self._second(
                route, request, once, race, attempt, AttemptReason.RESCUE
            )
        hedge = self._arm(route, request, once, race, attempt)
        try:
            answer = await once(
                route, self._router._capability.request_for(request, attempt.target), attempt
            )
        except asyncio.CancelledError:
            if race.took_over():
                assert race.companion is not None
                return race.companion.result()
            # The client went: the companion goes too (cancelled, not outpaced).
            await _discard(race.abandon(outpaced=False))
            raise
        except ProviderError as exc:
            race.close()
            if not isinstance(exc, CallerError):
                route.errors.append(exc)
            if race.companion is None or isinstance(exc, CallerError):
                await _discard(race.abandon())
                raise
            return await race.companion  # carrying on alone; its error is the request's now
        except BaseException:  # a bug below: the companion goes too (it would cancel us later)
            await _discard(race.abandon(outpaced=False))
            raise
        finally:
            if hedge is not None:
                hedge.cancel()
        await _discard(race.abandon())
        return answer, attempt.target

    def warm_guarded(self, tier: TierPlan, plan: Plan, stream: bool) -> bool:
        """Whether a warm attempt on ``plan``'s first target could go back to the primary (its
        second) without costing the client: an attempt left after it, and a guard to start the
        primary beside it (a quiet tier knows no p99 yet: a hanging backup would hold the
        client for its timeouts)."""
        if self._router._max_attempts < 2 or len(plan.targets) < 2:
            return False
        hedge = tier.hedge or _WARM_GUARD
        backup, primary = plan.targets[0].provider, plan.targets[1].provider
        return self._wait(hedge, (backup, primary), stream) is not None

    def _second(
        self,
        route: Route,
        request: Request,
        once: Once[T],
        race: Race[tuple[T, Target]],
        first: Try,
        reason: AttemptReason,
    ) -> None:
        """Start the request's next target beside ``first``, if it has one and may."""
        router, queue = self._router, route.queue
        if not race.can_start or route.attempts >= router._max_attempts:
            return
        state = router.state.current
        nxt = route.position + 1
        while nxt < len(queue) and not in_rotation(state, queue[nxt].provider, queue[nxt].model):
            nxt += 1  # e.g. another model of the provider that just tripped
        if nxt >= len(queue):
            return
        cause = Stalled.error_type if reason is AttemptReason.RESCUE else Outpaced.error_type
        try:
            attempt = router._try(route, queue[nxt], reason, first.target.provider, cause)
        except DeadlineExceeded:
            return  # no time left (this runs in the controller's tick: it must not raise)
        route.position = nxt
        race.partner = attempt.waiter
        # Beaten by a rescue, the attempt counts against its provider only if the controller
        # took that out of rotation; switched off by the operator, it did not fail.
        tripped = not state.share(first.target.provider, first.target.model)
        lost_as = Stalled if reason is AttemptReason.RESCUE and tripped else Outpaced
        race.start(self._companion(route, request, once, attempt), lost_as=lost_as)
        start, wall = router._clock.monotonic(), router._clock.wall()

        def settled(task: asyncio.Task[tuple[T, Target]]) -> None:
            if not attempt.waiter.done:
                # Cancelled before its first step (the request ended in the same turn of the
                # loop): it never ran, so it is reported here, and no longer counted as waiting.
                router._abandoned(route, attempt, request, start, wall)
            elif race.failed(task) and not in_rotation(
                router.state.current, first.target.provider, first.target.model
            ):
                # It failed while the request still waits on a provider out of rotation: rescue
                # it on the target after (the plan is not in panic: ``first`` had a companion).
                self._second(route, request, once, race, first, AttemptReason.RESCUE)

        assert race.companion is not None
        race.companion.add_done_callback(settled)

    async def _companion(
        self, route: Route, request: Request, once: Once[T], attempt: Try
    ) -> tuple[T, Target]:
        try:
            answer = await once(
                route, self._router._capability.request_for(request, attempt.target), attempt
            )
        except CallerError:
            raise
        except ProviderError as exc:
            route.errors.append(exc)
            raise
        return answer, attempt.target

    def _arm(
        self,
        route: Route,
        request: Request,
        once: Once[T],
        race: Race[tuple[T, Target]],
        attempt: Try,
    ) -> asyncio.Future[None] | None:
        """A timer that hedges ``attempt`` after the tier's hedge wait (None: no hedge). A warm
        attempt is always guarded: the primary starts beside it once it has waited the backup's
        own p99 (the primary's while the backup has too few answers): the client does not pay
        for a slow backup's timeouts."""
        hedge = route.tier.hedge
        warm = attempt.reason is AttemptReason.WARM
        if hedge is None and warm:
            hedge = _WARM_GUARD
        if hedge is None or route.plan.panic or route.position + 1 >= len(route.queue):
            return None
        candidates = [attempt.target.provider]
        if warm:
            candidates.append(route.queue[route.position + 1].provider)
        wait = self._wait(hedge, candidates, route.stream)
        if wait is None:
            return None
        clock = self._router._clock

        def fire() -> None:
            if not race.can_start:
                return
            if not warm:  # a warm attempt's guard spends no hedge budget: the client's due
                key = (route.tier.name, hedge.per_second)
                budget = self._budgets.get(key)
                now = clock.monotonic()
                if budget is None:
                    budget = self._budgets[key] = HedgeBudget(hedge.per_second, now)
                if not budget.take(now):
                    return
            self._second(route, request, once, race, attempt, AttemptReason.HEDGE)

        async def after() -> None:
            await clock.sleep(wait)
            fire()

        return asyncio.ensure_future(after())

    def _wait(self, hedge: Hedge, providers: Sequence[str], stream: bool) -> float | None:
        """How long an attempt on ``providers[0]`` waits before ``hedge`` starts the next target
        beside it: the hedge's fixed wait, or the first of ``providers`` with a known quantile
        of answer times (None: none has enough answers yet)."""
        if hedge.after is not None or hedge.quantile is None:
            return hedge.after
        for provider in providers:
            wait = self._router.inflight.typical(
                provider, stream=stream, quantile=hedge.quantile, least=hedge.min_samples
            )
            if wait is not None:
                return wait
        return None


async def _discard(extra: tuple[object, Target] | None) -> None:
    """A companion's answer that came too late to be used: a started stream is closed."""
    if extra is not None and isinstance(extra[0], RoutedStream):
        await extra[0].discard()
