"""controller._frozen.quick_init builds the same objects as the dataclass's own __init__."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

import pytest

import controller
from controller._frozen import quick_init, quick_maker
from controller.model import StreamChunk, relayed_text


def _quick_classes() -> list[type]:
    found: dict[str, type] = {}
    for module in pkgutil.walk_packages(controller.__path__, "controller."):
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, type) and "__dataclass_init__" in value.__dict__:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


QUICK = _quick_classes()


def test_the_request_path_records_use_it() -> None:
    names = {cls.__name__ for cls in QUICK}
    assert {"Request", "Source", "Response", "AttemptEvent", "RouteEvent", "HttpCall"} <= names
    # ... each by the open twin (the cheaper way), not the slots' descriptors
    assert all("_twin" in cls.__dict__["__init__"].__code__.co_names for cls in QUICK)


@pytest.mark.parametrize("cls", QUICK, ids=lambda cls: cls.__qualname__)
def test_it_builds_what_the_dataclass_init_builds(cls: Any) -> None:
    fields = dataclasses.fields(cls)
    every = {f.name: object() for f in fields}  # a distinct value per field
    required = {
        f.name: every[f.name]
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    for kwargs in (every, required):
        quick = cls(**kwargs)
        slow = object.__new__(cls)
        cls.__dataclass_init__(slow, **kwargs)
        assert [getattr(quick, f.name) for f in fields] == [getattr(slow, f.name) for f in fields]
    positional = [every[f.name] for f in fields if not f.kw_only]
    if positional and len(positional) == len(fields):
        assert cls(*positional) == cls(**every)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cls(**every), fields[0].name, None)


def test_defaults_factories_and_keyword_only_fields_are_kept() -> None:
    @quick_init
    @dataclass(frozen=True, slots=True)
    class Record:
        a: int
        b: str = "b"
        c: list[int] = field(default_factory=list)
        d: int = field(default=4, kw_only=True)

    assert Record(1) == Record(1, "b", [], d=4)
    assert Record(1).c is not Record(1).c  # a fresh list each time, as the factory makes
    assert dataclasses.replace(Record(1), b="z") == Record(1, "z")
    with pytest.raises(TypeError):
        Record(1, "b", [], 4)  # type: ignore[call-arg]  # d is keyword-only
    with pytest.raises(TypeError):
        Record()  # type: ignore[call-arg]


def test_it_refuses_what_it_cannot_build_the_same() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (NoSlots, Mutable, PostInit):
        with pytest.raises(TypeError):
            quick_init(cls)


def test_a_record_whose_layout_has_no_open_twin_stores_through_the_slots() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @quick_init
    @dataclass(frozen=True, slots=True)
    class Derived(Base):  # slots in a base too: a plain class of its own has another layout
        b: int = 2

    assert "_twin" not in Derived.__init__.__code__.co_names
    assert Derived(1) == Derived(1, 2)
    assert (Derived(1).a, Derived(1).b) == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Derived(1).b = 3  # type: ignore[misc]


def test_quick_maker_builds_what_the_class_builds() -> None:
    text, raw = "a piece", b'data: {"x":1}\n\n'
    made = relayed_text(text, raw)
    assert type(made) is StreamChunk
    assert made == StreamChunk(text=text, raw=raw)
    assert made.headers == ()
    assert made.usage is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.text = "other"  # type: ignore[misc]

    @quick_init
    @dataclass(frozen=True, slots=True)
    class Record:
        a: int
        b: list[int] = field(default_factory=list)
        c: str = "c"

    make = quick_maker(Record, "a", "c")
    first, second = make(1, "x"), make(1, "x")
    assert first == Record(1, c="x")
    assert first.b is not second.b  # a factory's default made afresh each time
    with pytest.raises(TypeError, match="no field 'z'"):
        quick_maker(Record, "z")
    with pytest.raises(TypeError, match="no default"):
        quick_maker(Record, "c")


def test_quick_maker_without_an_open_twin_calls_the_class() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclass(frozen=True, slots=True)
    class Derived(Base):
        b: int = 2

    assert quick_maker(Derived, "a")(1) == Derived(1, 2)
