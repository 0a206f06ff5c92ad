"""The public surface: ``controller.__all__`` lists exactly the public names the package has."""

from __future__ import annotations

from importlib.metadata import version

import controller


def test_all_matches_the_public_names() -> None:
    public = {name for name in vars(controller) if not name.startswith("_")}
    public -= {"annotations"}  # from __future__
    modules = {n for n in public if type(getattr(controller, n)).__name__ == "module"}
    assert set(controller.__all__) - {"__version__"} == public - modules
    assert len(controller.__all__) == len(set(controller.__all__))


def test_every_exported_name_is_defined_in_the_package() -> None:
    for name in controller.__all__:
        value = getattr(controller, name)
        module = getattr(value, "__module__", "controller")
        assert module.startswith("controller"), f"{name} comes from {module}"


def test_version_matches_the_distribution() -> None:
    assert controller.__version__ == version("llm-failover-controller")
