"""The fleet's spend totals: each replica's day in one Redis hash, budget alerts claimed once a
day (:class:`controller.routing._spend.SharedTotals` on the fleet's :class:`RedisLink`).

Each replica writes its own totals of the UTC day (budget key -> USD) into ``P:spend:<day>``
under its name and reads the others' there; a budget alert of the day is claimed in
``P:spend:<day>:alerted`` (``HSETNX``): the first replica to claim it sends it. Both hashes
expire two days after their last write. Every call is bounded by the link's timeout; one that
fails answers None (the replica then counts its own totals), never an exception.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping

from controller.fleet._redis import FleetUnavailable, RedisLink

log = logging.getLogger(__name__)

KEEP_SECONDS = 2 * 86_400.0  # a day's hashes outlive the day, and a replica's clock skew


class FleetSpend:
    """This replica's side of the fleet's spend totals."""

    def __init__(self, link: RedisLink, replica: str) -> None:
        self.link = link
        self.replica = replica

    async def exchange(self, day: int, mine: Mapping[str, float]) -> dict[str, float] | None:
        doc = json.dumps(dict(mine), separators=(",", ":")).encode()
        try:
            found = await self.link.spend_exchange(day, self.replica, doc, ttl=KEEP_SECONDS)
        except FleetUnavailable:
            return None
        others: dict[str, float] = {}
        for name, raw in found.items():
            if name == self.replica:
                continue
            try:
                totals = {str(k): float(v) for k, v in json.loads(raw).items()}
            except (ValueError, TypeError, AttributeError):
                log.warning("spend: unreadable totals of replica %s ignored", name)
                continue
            for key, usd in totals.items():
                if math.isfinite(usd) and usd > 0:
                    others[key] = others.get(key, 0.0) + usd
        return others

    async def claim(self, day: int, mark: str) -> bool | None:
        try:
            return await self.link.spend_claim(day, mark, ttl=KEEP_SECONDS)
        except FleetUnavailable:
            return None
