"""Names of a package that load on first use (a module-level ``__getattr__``, PEP 562).

A package lists its names and the submodule of each, then delegates:

    def __getattr__(name: str) -> Any:
        return lazy_attribute(__name__, _LAZY, name)

    def __dir__() -> list[str]:
        return lazy_dir(__name__, __all__)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from importlib import import_module
from typing import Any


def lazy_attribute(package: str, names: Mapping[str, str], name: str, *, cache: bool = True) -> Any:
    """``name`` of ``package``, imported from its submodule ``names[name]`` (relative to
    ``package``); with ``cache``, stored on the package so later look-ups skip the hook (without,
    a patched submodule attribute is seen through the package too)."""
    if name not in names:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(import_module(names[name], package), name)
    if cache:
        setattr(sys.modules[package], name, value)
    return value


def lazy_dir(package: str, exported: Iterable[str]) -> list[str]:
    """The package's dunder names and its exported names, sorted."""
    return sorted({*(n for n in vars(sys.modules[package]) if n.startswith("__")), *exported})
