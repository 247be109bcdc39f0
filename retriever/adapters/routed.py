"""What every adapter shares: a ``RouterRetriever`` over one index opened once (``RoutedIndex``), and each hit of a
routed search as the document's text with its id, score and the system that answered (``routed_hits``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from retriever.index.backends import FaissBackend, MilvusBackend
from retriever.index.base import DenseIndex, LexicalSearch
from retriever.router_retriever import RoutedResult, RouterRetriever

__all__ = ["RoutedHit", "RoutedIndex", "routed_hits"]

Path = str | os.PathLike


@dataclass(frozen=True)
class RoutedHit:
    """One document a routed search returned: its text, and ``metadata`` with ``doc_id``, ``score``, ``title``,
    the answering ``system`` (``base``, an expert, ``bm25`` or ``hybrid:<expert>``), the router's ``confidence``,
    ``unfamiliar`` (the router did not recognise the query) and the document's own ``metadata`` fields."""

    text: str
    metadata: dict

    ROUTING_KEYS = ("doc_id", "score", "system", "confidence", "unfamiliar")  # about the search, not the document


class RoutedIndex:
    """``retriever`` searching ``index`` (opened once: a path is not reopened and re-verified on every search),
    with ``lexical`` for BM25 and hybrid systems (default: the one beside the index)."""

    def __init__(self, retriever: RouterRetriever, index: DenseIndex, lexical: LexicalSearch | Path | None = None):
        if not isinstance(retriever, RouterRetriever):
            raise TypeError(f"retriever must be a RouterRetriever, got {type(retriever).__name__}")
        if not isinstance(index, DenseIndex):
            raise TypeError(f"index must be an opened index (CorpusIndex, MilvusIndex), got {type(index).__name__}; "
                            "RoutedIndex.open takes a path or a collection name")
        index.check_model(retriever.encoder.info)
        self.retriever, self.index, self.lexical = retriever, index, lexical

    @classmethod
    def open(cls, router: RouterRetriever | Path | None, index: DenseIndex | Path, *, routing: str = "default",
             model: str | None = None, device: str | None = None, uri: str | None = None,
             lexical: LexicalSearch | Path | None = None) -> RoutedIndex:
        """``router``: a ``RouterRetriever``, a router directory (its ``routing`` router: ``default`` is the one the
        routing folds favoured; ``model``: the base model it was built on) or None (the base model alone).
        ``index``: an opened index, a FAISS index directory, or with ``uri`` (a Milvus Lite ``.db`` file or a
        server) the name of a Milvus collection."""
        if isinstance(router, RouterRetriever):
            if model is not None or routing != "default":
                raise ValueError("model and routing are for loading a router directory; this RouterRetriever is "
                                 "already loaded")
            retriever = router
        elif router is None or isinstance(router, str | os.PathLike):
            retriever = RouterRetriever.open(router, routing, model=model, device=device)
        else:
            raise TypeError(f"router must be a RouterRetriever, a router directory or None, got {router!r}")
        if not isinstance(index, DenseIndex):
            if not isinstance(index, str | os.PathLike):
                raise TypeError(f"index must be an index, its directory or a Milvus collection name, got {index!r}")
            backend = FaissBackend() if uri is None else MilvusBackend(uri)
            index = backend.open(str(index), retriever.encoder.info, device=device)
        return cls(retriever, index, lexical)

    def search(self, queries: Sequence[str] | Mapping[str, str], k: int, fields: bool = True) -> list[RoutedResult]:
        """``RouterRetriever.search`` over this index: one routed result per query, in order."""
        return self.retriever.search(queries, k=k, index=self.index, lexical=self.lexical, fields=fields)

    def check_texts(self) -> None:
        """Refuse an index that keeps no document text (built before document stores): nothing to hand back."""
        if self.index.doc_ids and not self.index.documents(self.index.doc_ids[:1]):
            raise ValueError(f"index {self.index.path} keeps no document text (built before document stores); "
                             "rebuild it with `routerretriever index` to search it from LangChain or LlamaIndex")


def routed_hits(result: RoutedResult, where: object = "the index") -> list[RoutedHit]:
    """Each hit of ``result`` with its document's text and the routing decision (``RoutedHit``)."""
    if len(result.documents) != len(result.hits):
        raise ValueError(f"{where} returned no document text for query {result.query_id!r}; search it with "
                         "fields=True over an index that keeps its documents")
    hits = []
    for (doc_id, score), doc in zip(result.hits, result.documents, strict=True):
        if doc is None:
            raise ValueError(f"{where} returned document {doc_id!r}, which its document store does not hold")
        hits.append(RoutedHit(doc["text"], {
            "doc_id": doc_id, "score": float(score), "title": doc["title"], "system": result.system,
            "confidence": float(result.confidence), "unfamiliar": bool(result.unfamiliar),
            "metadata": dict(doc["metadata"] or {})}))
    return hits
