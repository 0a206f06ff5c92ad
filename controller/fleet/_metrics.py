"""The fleet's gauges (the dashboard's fleet row). Each replica reports itself and, for
``heartbeat_age`` and ``applied_version``, every replica whose heartbeat it read (labelled by
the replica described: a dashboard takes the freshest view of each). The names follow
``controller/telemetry``'s conventions (dots, ``failover.`` prefix); their Prometheus forms
are in ``controller/telemetry/names.py`` with the others."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from controller.fleet._member import Fleet, Role

METRIC_FLEET_LEADER = "failover.fleet.leader"
METRIC_FLEET_ROLE = "failover.fleet.role"
METRIC_FLEET_REDIS_UP = "failover.fleet.redis.up"
METRIC_FLEET_REPLICAS = "failover.fleet.replicas"
METRIC_FLEET_VERSION = "failover.fleet.version"
METRIC_FLEET_HEARTBEAT_AGE = "failover.fleet.heartbeat_age"
METRIC_FLEET_APPLIED_VERSION = "failover.fleet.applied_version"
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

    def heartbeat_age(_: CallbackOptions) -> Iterable[Observation]:
        for seen in fleet.describe()["replicas"]:
            if seen["heartbeat_age"] is not None:
                yield Observation(seen["heartbeat_age"], {ATTR_REPLICA: seen["name"]})

    def applied_version(_: CallbackOptions) -> Iterable[Observation]:
        for seen in fleet.describe()["replicas"]:
            yield Observation(seen["version"], {ATTR_REPLICA: seen["name"]})

    gauges = [
        (METRIC_FLEET_LEADER, leader, "1 on the replica that holds the lease"),
        (METRIC_FLEET_ROLE, role, "1 for this replica's role (leader, follower, local)"),
        (METRIC_FLEET_REDIS_UP, redis_up, "1 while Redis answers this replica"),
        (METRIC_FLEET_REPLICAS, replicas, "Replicas with a heartbeat in the window"),
        (METRIC_FLEET_VERSION, version, "Fleet state version this replica last saw in Redis"),
        (
            METRIC_FLEET_APPLIED_VERSION,
            applied_version,
            "Routing state version each replica this one knows of applies",
        ),
    ]
    for name, callback, description in gauges:
        meter.create_observable_gauge(name, callbacks=[callback], unit="", description=description)
    meter.create_observable_gauge(
        METRIC_FLEET_HEARTBEAT_AGE,
        callbacks=[heartbeat_age],
        unit="s",
        description="Seconds since each replica this one knows of was last heard in Redis",
    )
