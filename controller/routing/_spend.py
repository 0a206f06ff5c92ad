"""Spend: what each attempt cost at the user's prices, and daily budgets that alert and may
move traffic.

Prices are the user's config (USD per million input / output / cached input tokens, per
provider and model, ``*`` for any other model of a provider); nothing is fetched. An attempt
that reported usage costs ``input * in + output * out``, the input tokens it read from the
provider's prompt cache (OpenAI ``cached_tokens``, Anthropic ``cache_read_input_tokens``, Gemini
``cachedContentTokenCount``) at the ``cached_input`` price when one is set; Anthropic's cache
writes cost as input (their 1.25x surcharge is not modelled). The cost is counted in
``failover.cost`` (USD, by tier, provider and model) whatever the attempt's outcome.

A budget is a daily amount in USD for a provider or a tier, counted over the UTC day of the
injected clock's wall time. It alerts once at 80 % and once at 100 % a day. With ``enforce``, at
100 % the router's plans move the over-budget targets behind the others (a provider's: its
targets in every tier; a tier's: its priced targets, so an unpriced one, a self-hosted model say,
serves first), and the first attempt names the reason ``budget``. A budget never refuses a
request: when every target of a plan is over budget, the plan stands.

The day's totals survive a restart: they are written (atomically, off the request path, every
few seconds and at shutdown) to a JSON file beside the routing state (``<state>.spend.json``);
a crash loses at most the last few seconds of spend.

In a fleet (:attr:`Spend.shared`, the fleet's :class:`SharedTotals` in Redis) each replica
publishes its own day's totals on the same off-request-path round and reads the others'; its
budgets judge the fleet's sum (the 80 % and 100 % lines, enforcement, ``failover.budget.used``)
and each alert goes out once per fleet and day (the first replica to claim it sends it). A
request never waits on that round. While the totals cannot be shared, a replica counts its own
again (what it already alerted or enforced today stays) until the fleet answers; an alert it
gives meanwhile goes out unclaimed and is claimed then, so no other replica repeats it. Internal to
:mod:`controller.routing`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from controller._clock import Clock
from controller._tasks import sleep_or_woken
from controller.events import AttemptEvent, AttemptReason, RouteEvent
from controller.model import Usage
from controller.notify.alert import DEFAULT_SEVERITY, Alert, AlertEvent
from controller.routing.plan import Plan, Target, TierPlan
from controller.telemetry import names
from controller.telemetry._metrics import METRIC_UNITS

__all__ = ["ALERT_AT", "Budget", "Price", "Prices", "SharedTotals", "Spend"]

log = logging.getLogger(__name__)

ALERT_AT = (0.8, 1.0)  # shares of a daily budget that alert, once each a day
_DAY = 86_400.0
Scope = Literal["provider", "tier"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None  # None: cache reads cost as much as other input

    def cost(self, usage: Usage) -> float:
        """USD for ``usage``; the input tokens it says were read from the provider's prompt
        cache at ``cached_input`` (when set), the rest at ``input``."""
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        reads = self.input if self.cached_input is None else self.cached_input
        dollars = (usage.input_tokens - cached) * self.input + cached * reads
        return (dollars + usage.output_tokens * self.output) / 1e6


_UNKNOWN = Price()  # a target whose price has not been looked up yet


class Prices:
    """Prices by provider and model (``*``: any other model of the provider)."""

    __slots__ = ("_by",)

    def __init__(self, by: Mapping[tuple[str, str], Price]) -> None:
        self._by = dict(by)

    def of(self, provider: str, model: str) -> Price | None:
        found = self._by.get((provider, model))
        return found if found is not None else self._by.get((provider, "*"))

    def priced(self, target: Target) -> bool:
        price = self.of(target.provider, target.model)
        return price is not None and (price.input > 0 or price.output > 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    scope: Scope
    name: str
    daily_usd: float
    enforce: bool = False

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.name}"


class SharedTotals(Protocol):
    """Where the replicas of a fleet share their day's totals (the fleet's, in Redis). Each call
    is bounded in time and answers None when the fleet cannot be reached."""

    async def exchange(self, day: int, mine: Mapping[str, float]) -> dict[str, float] | None:
        """Publish this replica's totals of UTC ``day`` (budget key -> USD); the sum of the
        other replicas' totals of that day, by budget key."""
        ...

    async def claim(self, day: int, mark: str) -> bool | None:
        """Whether this replica is the first of the fleet to give alert ``mark`` on ``day``."""
        ...


class Spend:
    """A router listener that costs attempts, and a steer (:attr:`Router.steers`) that moves
    traffic off targets over an enforced budget. ``on_alert`` gets each budget alert (the
    runtime's dispatcher: quick, never blocks). ``path``: where the day's totals are kept."""

    def __init__(
        self,
        *,
        prices: Prices,
        budgets: Sequence[Budget] = (),
        clock: Clock,
        meter: Meter | None = None,
        on_alert: Callable[[Alert], None] | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.prices = prices
        self._budgets = {b.key: b for b in budgets}
        # name -> (budget, its key), the key built once (on_attempt runs for every attempt)
        self._by_provider = {b.name: (b, b.key) for b in budgets if b.scope == "provider"}
        self._by_tier = {b.name: (b, b.key) for b in budgets if b.scope == "tier"}
        self._clock = clock
        self._on_alert = on_alert
        self._path = Path(path) if path else None
        self._costs: dict[tuple[str, str, str], float] = {}  # tier, provider, model -> USD
        self._price_of: dict[tuple[str, str], Price | None] = {}  # provider, model -> price
        self._day = self._today()
        self._next_day = (self._day + 1) * _DAY  # wall time the day ends
        self._spent: dict[str, float] = {}  # budget key -> USD today
        self._alerted: set[str] = set()  # "<budget key>@<percent>" today
        self._over_providers: set[str] = set()  # enforced and spent
        self._over_tiers: set[str] = set()
        self._dirty = False
        # Fleet mode: the others' totals of today, by budget key (empty: alone, or unshared).
        self.shared: SharedTotals | None = None
        self._others: dict[str, float] = {}
        self._unshared = False  # the last exchange failed: counting this replica's own
        self._pending: list[tuple[int, str, Alert]] = []  # alerts to claim fleet-wide first
        self._unclaimed: list[tuple[int, str]] = []  # alerts sent while the fleet was away
        self._wake = asyncio.Event()  # an alert waits: exchange now
        self._load()
        if meter is not None:
            meter.create_observable_counter(
                names.METRIC_COST,
                callbacks=[self._observe_costs],
                unit=METRIC_UNITS[names.METRIC_COST],
                description="Spend in USD at the configured prices, by tier, provider and model.",
            )
            meter.create_observable_gauge(
                names.METRIC_BUDGET_USED,
                callbacks=[self._observe_budgets],
                unit=METRIC_UNITS[names.METRIC_BUDGET_USED],
                description="Share of each daily budget spent today (UTC); 1 is all of it.",
            )

    # ----------------------------------------------------------------------------- listener
    def on_attempt(self, event: AttemptEvent) -> None:
        usage = event.usage
        if usage is None:
            return
        target = (event.provider, event.model)
        price = self._price_of.get(target, _UNKNOWN)
        if price is _UNKNOWN:  # looked up once per target (a model may fall back to "*")
            price = self._price_of[target] = self.prices.of(*target)
        if price is None:
            return
        usd = price.cost(usage)
        if usd <= 0:
            return
        key = (event.tier, event.provider, event.model)
        costs = self._costs
        costs[key] = costs.get(key, 0.0) + usd
        if self._budgets:
            self._roll()
            found = self._by_provider.get(event.provider)
            if found is not None:
                self._charge(found[0], found[1], usd)
            found = self._by_tier.get(event.tier)
            if found is not None:
                self._charge(found[0], found[1], usd)

    def on_route(self, event: RouteEvent) -> None:
        return None

    def cost(self, tier: str, provider: str, model: str) -> float:
        """USD counted so far for ``tier``'s attempts on ``provider``'s ``model``."""
        return self._costs.get((tier, provider, model), 0.0)

    def spent(self, scope: Scope, name: str) -> float:
        """USD spent today against the budget of ``scope`` ``name``."""
        self._roll()
        key = f"{scope}:{name}"
        return self._spent.get(key, 0.0) + self._others.get(key, 0.0)

    # ----------------------------------------------------------------------------- steer
    def __call__(self, tier: TierPlan, plan: Plan) -> tuple[Plan, AttemptReason, str] | None:
        """``plan`` with the targets over an enforced budget moved behind the others, when the
        first one is; None when nothing moves (nothing over budget, or everything)."""
        if not (self._over_providers or self._over_tiers):
            return None
        self._roll()
        targets = plan.targets
        tier_over = tier.name in self._over_tiers

        def over(target: Target) -> bool:
            if target.provider in self._over_providers:
                return True
            return tier_over and self.prices.priced(target)

        if not targets or not over(targets[0]):
            return None
        kept = [t for t in targets if not over(t)]
        if not kept:
            return None  # a budget moves traffic, it never refuses a request
        moved = [t for t in targets if over(t)]
        return replace(plan, targets=(*kept, *moved)), AttemptReason.BUDGET, targets[0].provider

    # ----------------------------------------------------------------------------- budgets
    def _today(self) -> int:
        return int(self._clock.wall() // _DAY)

    def _roll(self) -> None:
        """A new UTC day starts every budget afresh."""
        if self._clock.wall() < self._next_day:
            return
        today = self._today()
        if today != self._day:
            self._day, self._next_day = today, (today + 1) * _DAY
            self._spent.clear()
            self._alerted.clear()
            self._over_providers.clear()
            self._over_tiers.clear()
            self._others = {}
            self._dirty = True

    def _charge(self, budget: Budget, key: str, usd: float) -> None:
        own = self._spent.get(key, 0.0)
        after = self._spent[key] = own + usd
        self._dirty = True
        if self._others:  # in a fleet: the others' totals of today too
            after += self._others.get(key, 0.0)
        if after < budget.daily_usd * ALERT_AT[0]:
            return  # the usual case: far from every line
        self._judge(budget, after - usd, after)

    def _judge(self, budget: Budget, before: float, after: float) -> None:
        """Today's total went from ``before`` to ``after``: alert the lines it crossed."""
        if after < budget.daily_usd * ALERT_AT[0]:
            return  # the usual case: far from every line
        for share in ALERT_AT:
            line = budget.daily_usd * share
            if before < line <= after:
                self._crossed(budget, share, after)
        if budget.enforce and after >= budget.daily_usd:
            self._enforce(budget)

    def _enforce(self, budget: Budget) -> None:
        over = self._over_providers if budget.scope == "provider" else self._over_tiers
        over.add(budget.name)

    def _crossed(self, budget: Budget, share: float, spent: float) -> None:
        mark = f"{budget.key}@{round(share * 100)}"
        if mark in self._alerted:
            return
        self._alerted.add(mark)
        if self._on_alert is None:
            return
        alert = budget_alert(budget, share, spent, at=self._clock.wall())
        if self.shared is not None and not self._unshared:
            self._pending.append((self._day, mark, alert))  # claimed fleet-wide, off this path
            self._wake.set()
            return
        if self.shared is not None:
            self._unclaimed.append((self._day, mark))
        self._send(alert)

    def _send(self, alert: Alert) -> None:
        assert self._on_alert is not None
        try:
            self._on_alert(alert)
        except Exception:  # an alert must never fail the request whose cost crossed the line
            log.exception("budget alert for %s could not be handed over", alert.event)

    # ----------------------------------------------------------------------------- fleet
    async def sync(self) -> None:
        """One round with the fleet (:attr:`shared`): publish this replica's totals of today,
        judge the budgets on the fleet's sum, and send the alerts this replica claims first.
        Unreachable, it counts its own totals (logged once) until an exchange succeeds."""
        shared = self.shared
        if shared is None or not self._budgets:
            return
        self._roll()
        day = self._day
        others = await shared.exchange(day, self._spent.copy())
        if day == self._day:  # else the day turned meanwhile: the next round is the new day's
            if others is None:
                self._unshare()
            else:
                self._share(others)
        if not self._unshared:  # what went out unclaimed is claimed now: not sent twice
            unclaimed, self._unclaimed = self._unclaimed, []
            for on, mark in unclaimed:
                if await shared.claim(on, mark) is None:
                    self._unclaimed.append((on, mark))
        pending, self._pending = self._pending, []
        for on, mark, alert in pending:
            won = None if self._unshared else await shared.claim(on, mark)
            if won is None:
                self._unclaimed.append((on, mark))
            if won is not False:  # first, or the claim could not be made: send
                self._send(alert)

    def _unshare(self) -> None:
        if not self._unshared:
            log.warning("spend: the fleet's totals are unavailable; budgets count this replica's")
        self._unshared, self._others = True, {}

    def _share(self, others: Mapping[str, float]) -> None:
        if self._unshared:
            log.warning("spend: the fleet's totals are back; budgets count the fleet's")
        self._unshared = False
        self._others = {k: float(others[k]) for k in self._budgets if k in others}
        for key, budget in self._budgets.items():
            total = self._spent.get(key, 0.0) + self._others.get(key, 0.0)
            self._judge(budget, 0.0, total)  # the lines reached, each alerted once a day

    # ----------------------------------------------------------------------------- state
    def flush(self) -> None:
        """Write the day's totals if they changed (atomically: a temporary file renamed)."""
        if self._path is None or not self._dirty:
            return
        self._dirty = False
        document = {
            "day": self._day,
            "spent": dict(self._spent),
            "alerted": sorted(self._alerted),
        }
        data = json.dumps(document, separators=(",", ":")).encode()
        try:
            fd, tmp = tempfile.mkstemp(prefix=".spend-", dir=self._path.parent)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, self._path)
        except OSError as exc:
            self._dirty = True
            log.warning("spend state %s not saved: %s", self._path, exc.strerror)

    async def run(self, every: float = 5.0) -> None:
        """Write the day's totals every ``every`` seconds (on a worker thread) and, in a fleet,
        share them (:meth:`sync`; at once when an alert waits), until cancelled."""
        while True:
            await self._pause(every)
            if self._dirty:
                await asyncio.to_thread(self.flush)
            if self.shared is not None:
                try:
                    await self.sync()
                except Exception:  # a bug here must not end the sharing for good
                    log.exception("spend: the round with the fleet failed")

    async def _pause(self, every: float) -> None:
        if self.shared is None:
            await self._clock.sleep(every)
            return
        await sleep_or_woken(self._clock, every, self._wake)
        self._wake.clear()

    def _load(self) -> None:
        if self._path is None:
            return
        try:
            document = json.loads(self._path.read_bytes())
            day, spent, alerted = document["day"], document["spent"], document["alerted"]
            if day != self._day:
                return  # another day's: today starts at 0
            # the whole shape checked before any of it is kept: a bad file never stops a start
            got = {k: float(v) for k, v in spent.items() if k in self._budgets}
            marks = {str(m) for m in alerted}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("spend state %s not read (%s): today starts at 0", self._path, exc)
            return
        self._spent, self._alerted = got, marks
        for key, usd in self._spent.items():
            budget = self._budgets[key]
            if budget.enforce and usd >= budget.daily_usd:
                self._enforce(budget)

    # ----------------------------------------------------------------------------- metrics
    def _observe_costs(self, options: CallbackOptions) -> Iterable[Observation]:
        keys = (names.ATTR_TIER, names.ATTR_PROVIDER, names.ATTR_MODEL)
        return [
            Observation(usd, dict(zip(keys, key, strict=True)))
            for key, usd in self._costs.copy().items()
        ]

    def _observe_budgets(self, options: CallbackOptions) -> Iterable[Observation]:
        # May run on an exporter's thread: reads a copy, changes nothing (a new day reads 0).
        today = self._day == self._today()
        spent = self._spent.copy() if today else {}
        others = self._others.copy() if today else {}
        return [
            Observation(
                (spent.get(key, 0.0) + others.get(key, 0.0)) / budget.daily_usd,
                {names.ATTR_SCOPE: budget.scope, names.ATTR_NAME: budget.name},
            )
            for key, budget in self._budgets.items()
        ]


def budget_alert(budget: Budget, share: float, spent: float, *, at: float) -> Alert:
    """The alert for ``budget`` reaching ``share`` of its daily amount (``spent`` USD)."""
    event = AlertEvent.BUDGET_EXCEEDED if share >= 1.0 else AlertEvent.BUDGET_WARNING
    if budget.enforce and share >= 1.0:
        then = "enforced: traffic moves to the next target until the UTC day ends"
    elif budget.enforce:
        then = "enforced: at 100% traffic moves to the next target"
    else:
        then = "not enforced: traffic stays where it is"
    detail = (
        f"{budget.scope} {budget.name} spent {_usd(spent)} of its {_usd(budget.daily_usd)} "
        f"daily budget ({spent / budget.daily_usd:.0%}); {then}"
    )
    return Alert(
        event=event,
        severity=DEFAULT_SEVERITY[event],
        at=at,
        provider=budget.name if budget.scope == "provider" else None,
        tier=budget.name if budget.scope == "tier" else None,
        detail=detail,
    )


def _usd(amount: float) -> str:
    """Dollars to the cent; a budget of less than a cent to the micro-dollar."""
    return f"${amount:.2f}" if amount >= 0.01 else f"${amount:.6f}"
