"""What several workflows share: opening a dataset (or a named index's documents) with its indexes, and the routing
settings' checks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from eval.data import open_dataset
from experts.config import ROUTE_ON
from experts.pseudo import routing_queries
from retriever.encoding.encoder import Encoder
from retriever.index.backends import IndexBackend
from retriever.index.base import IndexConfig, IndexedCorpus
from retriever.routers.directory import validate_name

__all__ = ["check_routing_settings", "named_index", "open_named_index", "opener"]


def named_index(backend: IndexBackend, target) -> tuple[str, str]:
    """``(name, where)`` of the named index ``target`` (a directory ``index --output`` wrote, or a Milvus
    collection), read from its metadata alone: a missing one fails here. Its name (the directory's) names it in a
    router directory, so it must be a valid expert name; ``where`` reopens it (an absolute path, or the name)."""
    name = Path(str(target)).name
    try:
        validate_name(name)
    except ValueError as err:
        raise ValueError(f"index {target}: its name {name!r} names its routing data; rename it ({err})") from None
    backend.version(str(target))
    return name, str(Path(target).resolve()) if Path(target).exists() else str(target)


def open_named_index(backend: IndexBackend, target, encoder: Encoder, lexical: bool = False):
    """``(IndexedCorpus, dense index, lexical index or None)`` of the named index ``target`` (``named_index``),
    checked against ``encoder``'s model: a collection as a corpus without judgments."""
    name, where = named_index(backend, target)
    index = backend.open(str(target), encoder.info)
    return IndexedCorpus(index, name, where), index, backend.lexical_of(index) if lexical else None


def opener(data_dir, backend: IndexBackend, encoder: Encoder, index_type: str = "flat", progress: bool = False,
           indexes: Mapping[str, str] | None = None):
    """``open(name, lexical, pseudo_queries) -> (dataset, dense index, lexical index or None)``, from the backend
    (built when missing; the lexical one only when asked for). With ``pseudo_queries`` the dataset is read without
    judgments: its training split is that many pseudo-queries from its corpus (``experts.pseudo.routing_queries``),
    what a router is fitted on for a dataset without qrels. A name in ``indexes`` (``{name: target}``) is a named
    index's documents instead (``open_named_index``: always without judgments)."""
    indexes = dict(indexes or {})

    def open_source(name: str, lexical: bool = True, pseudo_queries: int | None = None):
        if name in indexes:
            ds, *found = open_named_index(backend, indexes[name], encoder, lexical)
        else:
            ds = open_dataset(data_dir, name, judged=pseudo_queries is None)
            found = backend.ensure(ds, encoder, IndexConfig(index_type=index_type), lexical=lexical, progress=progress)
        return (ds if pseudo_queries is None else routing_queries(ds, pseudo_queries)), *found

    return open_source


def check_routing_settings(max_queries: int, route_on: str) -> None:
    if not isinstance(max_queries, int) or isinstance(max_queries, bool) or max_queries < 1:
        raise ValueError(f"max_queries must be a positive integer, got {max_queries!r}")
    if route_on not in ROUTE_ON:
        raise ValueError(f"unknown routing input {route_on!r}; choose one of {', '.join(ROUTE_ON)}")
