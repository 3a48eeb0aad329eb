"""Re-exports that load their submodule on first use.

A package ``__init__`` that imports its submodules makes every import of
any one of them load them all: ``capture.cli`` needs only
:mod:`capture.filter.levels` to build its parser, and an eager
``capture/filter/__init__.py`` loaded the classifier and most of
:mod:`capture.vmcore` with it, into the start-up of every command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

__all__ = ("lazy_getattr",)


def lazy_getattr(package: str, defined_in: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: each name of ``defined_in``
    is imported from the submodule it maps to when it is first asked for."""

    def load(name: str) -> object:
        try:
            submodule = f"{package}.{defined_in[name]}"
        except KeyError:
            # AttributeError, so that ``from package import submodule`` still
            # imports a submodule that is not loaded yet.
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(__import__(submodule, fromlist=(name,)), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return load
