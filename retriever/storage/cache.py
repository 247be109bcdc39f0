"""Where cached artifacts live and what a cache entry's name records: the cache directory
(``$ROUTERRETRIEVER_CACHE_DIR``) and the encoding precision an index was built in."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_DIR_ENV", "built_precision", "default_cache_dir", "precision_suffix"]

CACHE_DIR_ENV = "ROUTERRETRIEVER_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where corpus indexes are cached unless told otherwise: ``$ROUTERRETRIEVER_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/routerretriever`` (``~/.cache/routerretriever``). Read when called, never at import."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "routerretriever"


def precision_suffix(precision: str, sep: str) -> str:
    """What a cache entry's name adds for a corpus encoded in ``precision`` (nothing for fp32, the default)."""
    return "" if precision == "fp32" else f"{sep}{precision}"


def built_precision(meta: dict) -> str:
    """The precision an index's corpus was encoded in (indexes written before it was recorded: fp32)."""
    return meta.get("precision", "fp32")

