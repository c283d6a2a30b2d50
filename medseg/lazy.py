"""Lazy package attributes (PEP 562): names resolved from their modules on first access.

Packages whose public names live in heavy modules (torch, matplotlib, requests) export them
through :func:`lazy_exports`, so importing the package stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that import ``exports[name]`` (a module path) on first use.

    Example:
        >>> getattr_, dir_ = lazy_exports("pkg", {"sqrt": "math"})
        >>> getattr_("sqrt")(9.0), "sqrt" in dir_()
        (3.0, True)
    """
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
