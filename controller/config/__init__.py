"""The config file and what acts on it: the typed model and its loading (``_model.py``; its
sections and the YAML lines errors point at: ``_model_*.py``), the ``models:`` shorthand
expanded into tiers before validation (``_shorthand.py``), the targets a valid file can never
reach (``_reach.py``, for ``failover check``), the watcher that hot-reloads a saved edit
(``_watch.py``), and the in-place rewrite of the ``kill_switch`` block that ``failover
kill-switch`` does (``_kill_switch_file.py``).

It sits above ``control/``, ``notify/``, ``providers/`` and ``routing/`` (whose component configs
it gathers) and below ``runtime.py`` and ``cli.py``; nothing under it imports it.
"""

from controller.config._kill_switch_file import set_kill_switch, usage_problem
from controller.config._model import (
    Config,
    ProviderConfig,
    load_config,
    parse_config,
    readiness_problems,
    resolve_secret,
)
from controller.config._reach import unreachable
from controller.config._watch import ConfigWatcher

__all__ = [
    "Config",
    "ConfigWatcher",
    "ProviderConfig",
    "load_config",
    "parse_config",
    "readiness_problems",
    "resolve_secret",
    "set_kill_switch",
    "unreachable",
    "usage_problem",
]
