"""What several workflows share: opening a dataset (or a named index's documents) with its indexes, and the routing
settings' checks."""

from __future__ import annotations

from pathlib import Path

from eval.data import open_dataset
from experts.config import ROUTE_ON
from experts.pseudo import routing_queries
from retriever.encoding.encoder import Encoder
from retriever.index.backends import IndexBackend
from retriever.index.base import IndexConfig, IndexedCorpus
from retriever.routers.directory import validate_name

__all__ = ["check_routing_settings", "named_index", "open_named_index", "opener", "reopen_named_index"]


def named_index(backend: IndexBackend, target) -> tuple[str, dict]:
    """``(name, record)`` of the named index ``target`` (a directory ``index --output`` wrote, or a Milvus
    collection), read from its metadata alone: a missing one fails here. Its name (the directory's, or the
    collection's) names it in a router directory, so it must be a valid expert name; ``record`` reopens it
    (``{"backend", "target"}``: the directory's absolute path or the collection's name; ``"uri"`` for Milvus)."""
    faiss = backend.name == "faiss"
    where = str(Path(str(target)).resolve()) if faiss else str(target)
    name = Path(where).name
    try:
        validate_name(name)
    except ValueError as err:
        raise ValueError(f"index {target}: its name {name!r} names its routing data; rename it ({err})") from None
    backend.version(str(target))
    return name, {"backend": backend.name, "target": where, **({} if faiss else {"uri": str(backend.uri)})}


def reopen_named_index(backend: IndexBackend, name: str, record: dict) -> None:
    """Check that ``backend`` reopens the named index ``record`` describes (``named_index``), as routers recorded it:
    there still, and through the same backend (and Milvus URI); else a ValueError naming both."""
    given = {"backend": backend.name, "uri": None if backend.name == "faiss" else str(backend.uri)}
    if {key: record.get(key) for key in given} != given:
        raise ValueError(f"index {name!r} was recorded as {record}, but this command's backend is {backend.name}"
                         + (f" at {backend.uri}" if given["uri"] else "") + ": give the --backend (and --uri) it "
                         "was indexed with")
    found = named_index(backend, record["target"])[1]
    if found != record:
        raise ValueError(f"index {name!r} was recorded as {record}, but opens as {found}")


def open_named_index(backend: IndexBackend, target, encoder: Encoder, lexical: bool = False):
    """``(IndexedCorpus, dense index, lexical index or None)`` of the named index ``target`` (``named_index``),
    checked against ``encoder``'s model and holding its documents' text: a collection as a corpus without
    judgments."""
    name, record = named_index(backend, target)
    index = backend.open(str(target), encoder.info)
    if index.doc_ids and not index.documents(index.doc_ids[:1]):
        raise ValueError(f"index {target} holds no document text (built before documents were stored): "
                         "pseudo-queries are drawn from it; rebuild it with `routerretriever index --corpus`")
    return IndexedCorpus(index, name, record), index, backend.lexical_of(index) if lexical else None


def opener(data_dir, backend: IndexBackend, encoder: Encoder, index_type: str = "flat", progress: bool = False):
    """``open(name, lexical, pseudo_queries, index) -> (dataset, dense index, lexical index or None)``, from the
    backend (built when missing; the lexical one only when asked for). With ``pseudo_queries`` the dataset is read
    without judgments: its training split is that many pseudo-queries from its corpus
    (``experts.pseudo.routing_queries``), what a router is fitted on for a dataset without qrels. With ``index`` (a
    ``named_index`` record) the source is that named index's documents instead, always without judgments."""

    def open_source(name: str, lexical: bool = True, pseudo_queries: int | None = None, index: dict | None = None):
        if index is not None:
            if pseudo_queries is None:
                raise ValueError(f"index {name!r} has no judgments: it is read through pseudo-queries only")
            reopen_named_index(backend, name, index)
            ds, *found = open_named_index(backend, index["target"], encoder, lexical)
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
