"""Package ``__init__``s that import each public name on first use (PEP 562), so that importing one module of a
package (``eval.metrics``) does not import the whole package (the routers, FAISS, torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], object]]:
    """``(__all__, __getattr__)`` for package ``package`` whose public names live in the modules ``exports``
    maps them to."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return sorted(exports), __getattr__
