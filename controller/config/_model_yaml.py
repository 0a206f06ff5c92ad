"""The YAML document behind the model: a key written twice is refused, a validation error
becomes a :class:`ConfigError` naming the dotted key and its line, and a problem found after
validation (:func:`located`) is pointed at its key's line too."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from controller._errors import ConfigError
from controller.config._model_base import AtField, Ref
from controller.config._shorthand import origin


def refuse_duplicate_keys(node: yaml.Node | None, path: list[str], source: str) -> None:
    """YAML lets a key appear twice in one mapping and keeps the last: a second ``tiers.fast``
    or ``kill_switch`` block would silently replace the first (and ``failover kill-switch``
    would edit the one that does not count). Refused instead, naming both lines."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.value == "<<":  # merge keys repeat
                continue
            line = key.start_mark.line + 1
            if key.value in seen:
                message = f"duplicate key (first on line {seen[key.value]}; YAML keeps only one)"
                dotted = ".".join([*path, key.value])
                raise ConfigError(message, key=dotted, line=line, source=source)
            seen[key.value] = line
            refuse_duplicate_keys(value, [*path, key.value], source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            refuse_duplicate_keys(item, [*path, str(index)], source)


def config_error(
    exc: ValidationError, node: yaml.Node | None, source: str, long_form: dict[str, bool]
) -> ConfigError:
    errors = exc.errors()
    # A misspelled key usually also leaves a required one missing; the spelling is the news.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in first["loc"] if not _is_type_tag(str(part))]
    message = first["msg"].removeprefix("Value error, ")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, Ref):
        loc = cause.loc
    elif isinstance(cause, AtField):
        loc = [*loc, cause.field]
    elif first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see deploy/failover.example.yaml)"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    loc = origin(loc, long_form)  # a tier written under models: is reported there
    return ConfigError(message, key=".".join(loc), line=line_of(node, loc), source=source)


def _is_type_tag(part: str) -> bool:
    """A part pydantic adds to the path of an error inside a union (``constrained-float``,
    ``literal['p50','p95']``): not a key of the file."""
    return "[" in part or part.startswith(("constrained-", "function-")) or part in _SCALARS


_SCALARS = frozenset({"int", "float", "str", "bool"})


def line_of(node: yaml.Node | None, loc: list[str], *, exact: bool = False) -> int | None:
    """The 1-based line of the deepest node along ``loc`` that exists in the document (with
    ``exact``, None unless the whole of ``loc`` does: a default is on no line)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit():
            items = node.value
            if int(part) < len(items):
                child = items[int(part)]
                line = child.start_mark.line + 1
        if child is None:
            return None if exact else line
        node = child
    return line


def located(source: str | os.PathLike[str], key: str, message: str) -> ConfigError:
    """A problem at ``key``: an environment variable, or a dotted key found in the file."""
    if "." not in key:
        return ConfigError(message, key=key, source="environment")
    try:
        node = yaml.compose(Path(source).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        node = None
    line = line_of(node, key.split("."), exact=True)
    return ConfigError(message, key=key, line=line, source=str(source))
