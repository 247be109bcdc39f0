"""``routerretriever search``: queries answered by the base model alone, or routed over a router directory's
systems, from a FAISS index or a Milvus collection."""

from __future__ import annotations

from collections.abc import Sequence

from eval.data import merge_queries
from retriever.index.backends import FaissBackend, IndexBackend

__all__ = ["check_search_options", "result_record", "search_index"]


def check_search_options(router_dir=None, routing: str = "default", backend_name: str = "faiss",
                         lexical_dir=None) -> None:
    """Options that do not go together fail here (the CLI shows them as usage errors)."""
    if router_dir is None and routing != "default":
        raise ValueError("--routing chooses a router of --router DIR; give --router too")
    if backend_name == "milvus" and lexical_dir is not None:
        raise ValueError("--lexical is for FAISS indexes; a Milvus collection holds its own BM25 side")


def search_index(index_dir, query_texts: Sequence[str] = (), queries_file=None, backend: IndexBackend | None = None,
                 lexical_dir=None, router_dir=None, routing: str = "default", model: str | None = None,
                 top_k: int = 10, device: str | None = None, fields: bool = True) -> tuple[dict[str, str], list]:
    """``(queries by id, one RoutedResult per query)``: the queries given one by one and from ``queries_file``
    (``eval.data.merge_queries``), searched in ``index_dir`` of the backend (FAISS by default); ``fields``: hits
    carry their documents' title, text and metadata."""
    from retriever.router_retriever import RouterRetriever

    backend = backend or FaissBackend()
    check_search_options(router_dir, routing, backend.name, lexical_dir)
    queries = merge_queries(query_texts, queries_file)
    if router_dir is None:
        retriever = RouterRetriever.base_only(model, device=device)
    else:
        retriever = RouterRetriever.load(router_dir, routing, model=model, device=device)
    corpus_index = backend.open(index_dir, retriever.encoder.info, device=device)
    return queries, retriever.search(queries, k=top_k, index=corpus_index, lexical=lexical_dir, fields=fields)


def result_record(result, query: str) -> dict:
    """One query's answer as ``search --json`` prints it (``RoutedResult.record``, which the search service answers
    with too): the routing decision, and each hit's id and score with its document's title, text and metadata
    where the index stores them."""
    return result.record(query)
