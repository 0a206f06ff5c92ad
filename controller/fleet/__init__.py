"""Fleet mode: several gateway replicas, one routing decision, on Redis (or Valkey).

``state.backend: redis`` turns it on (:class:`FleetConfig`). Each replica pushes its signal
windows and a heartbeat off the request path; one leader (a lease in Redis) decides on the
fleet's aggregate and writes the versioned routing state with compare-and-set; every replica
applies it from pub/sub (and a periodic read). Redis is never on the request path: away, each
replica decides alone and says so. See :mod:`controller.fleet._member` for the roles.
"""

from controller.fleet._member import Fleet, FleetStore, Role, converge
from controller.fleet._operator import (
    check_fleet,
    fleet_audit,
    fleet_kill_switch_command,
    set_fleet_kill_switch,
)
from controller.fleet._redis import FleetUnavailable, RedisLink
from controller.fleet.config import FleetConfig

__all__ = [
    "Fleet",
    "FleetConfig",
    "FleetStore",
    "FleetUnavailable",
    "RedisLink",
    "Role",
    "check_fleet",
    "converge",
    "fleet_audit",
    "fleet_kill_switch_command",
    "set_fleet_kill_switch",
]
