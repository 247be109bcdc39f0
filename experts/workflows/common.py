"""What several workflows share: opening a dataset with its indexes, and the routing settings' checks."""

from __future__ import annotations

from eval.data import open_dataset
from experts.config import ROUTE_ON
from experts.pseudo import routing_queries
from retriever.encoding.encoder import Encoder
from retriever.index.backends import IndexBackend
from retriever.index.base import IndexConfig

__all__ = ["check_routing_settings", "opener"]


def opener(data_dir, backend: IndexBackend, encoder: Encoder, index_type: str = "flat", progress: bool = False):
    """``open(name, lexical, pseudo_queries) -> (dataset, dense index, lexical index or None)``, from the backend
    (built when missing; the lexical one only when asked for). With ``pseudo_queries`` the dataset is read without
    judgments: its training split is that many pseudo-queries from its corpus (``experts.pseudo.routing_queries``),
    what a router is fitted on for a dataset without qrels."""

    def open_source(name: str, lexical: bool = True, pseudo_queries: int | None = None):
        ds = open_dataset(data_dir, name, judged=pseudo_queries is None)
        indexes = backend.ensure(ds, encoder, IndexConfig(index_type=index_type), lexical=lexical, progress=progress)
        return (ds if pseudo_queries is None else routing_queries(ds, pseudo_queries)), *indexes

    return open_source


def check_routing_settings(max_queries: int, route_on: str) -> None:
    if not isinstance(max_queries, int) or isinstance(max_queries, bool) or max_queries < 1:
        raise ValueError(f"max_queries must be a positive integer, got {max_queries!r}")
    if route_on not in ROUTE_ON:
        raise ValueError(f"unknown routing input {route_on!r}; choose one of {', '.join(ROUTE_ON)}")
