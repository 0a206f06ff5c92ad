"""The fleet's gauges (the dashboard's fleet row). Names here: ``controller/telemetry`` is
another agent's module this round; they follow its conventions (dots, ``failover.`` prefix)."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from controller.fleet._member import Fleet, Role

METRIC_FLEET_LEADER = "failover.fleet.leader"
METRIC_FLEET_ROLE = "failover.fleet.role"
METRIC_FLEET_REDIS_UP = "failover.fleet.redis.up"
METRIC_FLEET_REPLICAS = "failover.fleet.replicas"
METRIC_FLEET_VERSION = "failover.fleet.version"
ATTR_ROLE = "failover.fleet.role"
ATTR_REPLICA = "failover.fleet.replica"


def register_fleet_gauges(fleet: Fleet, meter: Meter) -> None:
    """Observable gauges read at export time from the fleet member's last view."""

    def leader(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(1 if fleet.role is Role.LEADER else 0, {ATTR_REPLICA: fleet.replica})

    def role(_: CallbackOptions) -> Iterable[Observation]:
        for candidate in Role:
            yield Observation(
                1 if fleet.role is candidate else 0,
                {ATTR_REPLICA: fleet.replica, ATTR_ROLE: candidate.value},
            )

    def redis_up(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(1 if fleet.available else 0, {ATTR_REPLICA: fleet.replica})

    def replicas(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(len(fleet.describe()["replicas"]), {ATTR_REPLICA: fleet.replica})

    def version(_: CallbackOptions) -> Iterable[Observation]:
        yield Observation(fleet.fleet_version, {ATTR_REPLICA: fleet.replica})

    gauges = [
        (METRIC_FLEET_LEADER, leader, "1 on the replica that holds the lease"),
        (METRIC_FLEET_ROLE, role, "1 for this replica's role (leader, follower, local)"),
        (METRIC_FLEET_REDIS_UP, redis_up, "1 while Redis answers this replica"),
        (METRIC_FLEET_REPLICAS, replicas, "Replicas with a heartbeat in the window"),
        (METRIC_FLEET_VERSION, version, "Fleet state version this replica last saw in Redis"),
    ]
    for name, callback, description in gauges:
        meter.create_observable_gauge(name, callbacks=[callback], unit="", description=description)
