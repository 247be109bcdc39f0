"""What a search service serves and how: ``ServiceConfig``, plain data (paths, names, numbers), so one value starts
a local server or travels to every Ray Serve replica. Nothing here imports the web stack or loads a model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from retriever.index.backends import BACKENDS

__all__ = ["ServiceConfig", "refuse_lite_replicas"]


def refuse_lite_replicas(uri: str | None) -> None:
    """Ray Serve replicas cannot share a Milvus Lite file (only the process that opened it serves it)."""
    if uri is not None and str(uri).endswith(".db"):
        raise ValueError(f"a Milvus Lite file ({uri}) is served by the one process that opened it, so Ray Serve "
                         "replicas cannot share it: serve it without --replicas, or use a Milvus server "
                         "(--uri http://host:19530)")


@dataclass(frozen=True)
class ServiceConfig:
    """``index``: a FAISS index directory or a Milvus collection (``backend``, ``uri``); ``router``: a router
    directory (None: the base model alone) and its router ``routing``; ``model``/``device``: the base model and the
    torch device queries are encoded (and a FAISS flat index searched) on.

    Batching (text-embeddings-inference's shape): concurrent requests wait at most ``max_wait_ms`` for others to
    join them, up to ``max_batch`` queries in one routed batch; at most ``max_queue`` requests wait, more are
    refused (503). Requests: at most ``max_queries`` queries of at most ``max_query_chars`` characters, ``k`` from 1
    to ``max_k``. ``reload_interval``: seconds between checks of the index's version (a new one is opened and
    swapped in whole); 0 checks only on ``POST /reload``."""

    index: str
    router: str | None = None
    routing: str = "default"
    backend: str = "faiss"
    uri: str | None = None
    model: str | None = None
    device: str | None = None
    max_batch: int = 256
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    max_queries: int = 256
    max_query_chars: int = 10_000
    max_k: int = 100
    reload_interval: float = 1.0

    def __post_init__(self):
        if not isinstance(self.index, str) or not self.index:
            raise ValueError(f"index must name an index directory or Milvus collection, got {self.index!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown index backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        for name in ("max_batch", "max_queue", "max_queries", "max_query_chars", "max_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_wait_ms", "reload_interval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of at least 0, got {value!r}")

    def describe(self) -> dict:
        """The settings ``GET /info`` shows (every field)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes) -> ServiceConfig:
        return ServiceConfig(**{**asdict(self), **changes})
