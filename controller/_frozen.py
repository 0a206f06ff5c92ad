"""A cheaper ``__init__`` for the frozen dataclasses built on every request.

A frozen dataclass's generated ``__init__`` stores each field with ``object.__setattr__(self,
name, value)`` (its own ``__setattr__`` refuses), which goes through the type's attribute lookup
on every field. Counted by callgrind for a 15-field record: 25,000 CPU instructions, where a
mutable dataclass takes 6,000; a request builds some 110 fields of such records (its
``Request``, ``Source``, ``Response``, the attempt and route events, ...), which made this the
largest single item of the gateway's own per-request cost (``python -m
tests.bench.instructions``).

:func:`quick_init` replaces that ``__init__`` with one that builds the same object the way a
mutable dataclass does: for the duration of ``__init__`` the new instance's class is an *open
twin* (a plain class with the very same slots, so the same memory layout), its fields are
stored with ordinary attribute assignment, and its class is set back before ``__init__``
returns. Nothing else can see the instance meanwhile; what the caller gets is the frozen
instance, equal to what the dataclass's own ``__init__`` builds: 9,000 instructions for those
15 fields. Where CPython would refuse the class switch (layouts that differ), each field is
stored through its slot's descriptor instead (15,000).

It takes a frozen dataclass with ``slots=True`` and no ``__post_init__`` or ``init=False``
fields, and refuses anything else. The dataclass's own ``__init__`` stays available as
``__dataclass_init__`` (``tests/test_frozen.py`` checks that both build equal objects for every
class that uses this, and that those objects stay frozen).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

__all__ = ["quick_init", "quick_maker"]

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """``cls`` (a frozen slots dataclass) with the cheaper ``__init__`` described above."""
    _refuse_unless_frozen_slots(cls, "quick_init")
    fields = dataclasses.fields(cast(Any, cls))
    twin = _open_twin(cls)
    p = _prefix(f.name for f in fields)  # the code's own names: no field's name hides them
    namespace: dict[str, Any] = {
        f"{p}_MISSING": dataclasses.MISSING,
        f"{p}_set": object.__setattr__,
        f"{p}_twin": twin,
        f"{p}_frozen": cls,
    }
    positional: list[str] = []
    keywords: list[str] = []
    body = [f"    {p}_set({p}self, '__class__', {p}_twin)"] if twin is not None else []
    for index, f in enumerate(fields):
        if not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: quick_init needs every field in __init__")
        param = f.name
        if f.default is not dataclasses.MISSING:
            namespace[f"{p}_default{index}"] = f.default
            param += f"={p}_default{index}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"{p}_factory{index}"] = f.default_factory
            param += f"={p}_MISSING"
            body.append(f"    if {f.name} is {p}_MISSING: {f.name} = {p}_factory{index}()")
        if twin is not None:
            body.append(f"    {p}self.{f.name} = {f.name}")
        else:
            namespace[f"{p}_store{index}"] = _slot(cls, f.name).__set__
            body.append(f"    {p}_store{index}({p}self, {f.name})")
        (keywords if f.kw_only else positional).append(param)
    if twin is not None:
        body.append(f"    {p}self.__class__ = {p}_frozen")
    signature = ", ".join([f"{p}self", *positional, *(["*", *keywords] if keywords else [])])
    source = f"def __init__({signature}) -> None:\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # code built above from the dataclass's own fields
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    type.__setattr__(cls, "__dataclass_init__", cls.__init__)
    type.__setattr__(cls, "__init__", init)
    return cls


def quick_maker(cls: type[T], *names: str) -> Callable[..., T]:
    """A function that builds ``cls`` (a frozen slots dataclass) from the fields ``names``,
    given by position, every other field its default: one object a relayed stream builds per
    event, made as an instance of the open twin and switched to ``cls`` once filled, without
    the class call and its keywords (``StreamChunk(text=..., raw=...)`` 750 ns on the
    development box, this 310 ns). Equal to ``cls(**dict(zip(names, values)))``, which
    ``tests/test_frozen.py`` checks. It refuses what the class call would not build that way:
    a ``__post_init__`` (not run here), a field not in ``__init__`` named, a name twice."""
    _refuse_unless_frozen_slots(cls, "quick_maker")
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls))}
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {unknown[0]!r}")
    if len(set(names)) != len(names) or not all(fields[name].init for name in names):
        raise TypeError(f"{cls.__name__}: quick_maker takes each __init__ field once")
    twin = _open_twin(cls)
    if twin is None:
        return lambda *values: cls(**dict(zip(names, values, strict=True)))
    p = _prefix(fields)  # the code's own names: a field may be called self or _new
    namespace: dict[str, Any] = {f"{p}_new": object.__new__, f"{p}_twin": twin, f"{p}_frozen": cls}
    body = [f"    {p}self = {p}_new({p}_twin)"]
    for index, f in enumerate(fields.values()):
        if f.name in names:
            body.append(f"    {p}self.{f.name} = {f.name}")
        elif f.default is not dataclasses.MISSING:
            namespace[f"{p}_default{index}"] = f.default
            body.append(f"    {p}self.{f.name} = {p}_default{index}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"{p}_factory{index}"] = f.default_factory
            body.append(f"    {p}self.{f.name} = {p}_factory{index}()")
        else:
            raise TypeError(f"{cls.__name__}.{f.name} has no default: name it")
    body += [f"    {p}self.__class__ = {p}_frozen", f"    return {p}self"]
    source = f"def make({', '.join(names)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)  # code built above from the dataclass's own fields
    make: Callable[..., T] = namespace["make"]
    make.__qualname__ = f"{cls.__qualname__}.make"
    make.__module__ = cls.__module__
    return make


_OWN = re.compile(r"self|_(?:MISSING|set|new|twin|frozen|(?:default|factory|store)\d+)")


def _prefix(names: Iterable[str]) -> str:
    """What the generated code's own names (``self``, ``_twin``, ...) begin with: nothing,
    unless a field is named as one of them (its parameter would hide it); then a prefix no
    field's name begins with."""
    names = tuple(names)
    if not any(_OWN.fullmatch(name) for name in names):
        return ""
    prefix = "_q"
    while any(name.startswith(prefix) for name in names):
        prefix += "_"
    return prefix


def _refuse_unless_frozen_slots(cls: type, who: str) -> None:
    """TypeError unless ``cls`` is a frozen dataclass with slots and no ``__post_init__``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: {who} takes a frozen dataclass with slots=True")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: {who} does not run __post_init__")


def _open_twin(cls: type) -> type | None:
    """A plain class with ``cls``'s slots, between whose instances and ``cls``'s CPython lets
    an object switch (same layout); None where it would not."""
    if cls.__bases__ != (object,):
        return None
    twin = type(f"_Open{cls.__name__}", (), {"__slots__": cls.__dict__["__slots__"]})
    probe: Any = object.__new__(cls)
    try:
        object.__setattr__(probe, "__class__", twin)
        probe.__class__ = cls
    except TypeError:
        return None
    return twin


def _slot(cls: type, name: str) -> Any:
    """The slot descriptor of field ``name`` (on ``cls`` or the base class that declares it)."""
    for klass in cls.__mro__:
        found = klass.__dict__.get(name)
        if found is not None and hasattr(found, "__set__"):
            return found
    raise TypeError(f"{cls.__name__}.{name} is not a slot")
