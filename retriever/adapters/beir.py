"""The routed retriever as a BEIR ``BaseSearch``, for ``beir.retrieval.evaluation.EvaluateRetrieval``:

    evaluator = EvaluateRetrieval(RoutedSearch("my-router", "my-index"))
    results = evaluator.retrieve(corpus, queries)            # {query id: {doc id: score}}
    ndcg, _map, recall, precision = evaluator.evaluate(qrels, results, evaluator.k_values)

The corpus BEIR passes must be the one the index holds (checked by id); it is not encoded again. Each query gets
BEIR's ``top_k`` (``max(k_values)``) results; a hybrid fuses each list's top 100 whatever the depth, as
``routerretriever evaluate`` does, so nDCG@10 equals its on the same index, router and queries
(``tests/test_adapters.py``).
"""

from __future__ import annotations

import os

from beir.retrieval.search import BaseSearch

from retriever.adapters.routed import RoutedIndex
from retriever.index.base import DenseIndex, LexicalSearch
from retriever.router_retriever import RoutedResult, RouterRetriever

__all__ = ["RoutedSearch"]

SCORE_FUNCTIONS = (None, "cos_sim", "dot")  # the index's inner product over normalised vectors is both


class RoutedSearch(BaseSearch):
    """Routed search over one index, in BEIR's shape. ``router``, ``index`` and the keywords: as
    ``RoutedIndex.open`` (a router directory or a ``RouterRetriever`` or None for the base model; a FAISS
    directory, an opened index, or a Milvus collection name with ``uri``). After a search, ``results`` holds
    BEIR's result dict and ``routed`` each query's ``RoutedResult`` (the system that answered, the router's
    confidence)."""

    def __init__(self, router: RouterRetriever | str | os.PathLike | None, index: DenseIndex | str | os.PathLike, *,
                 routing: str = "default", model: str | None = None, device: str | None = None, uri: str | None = None,
                 lexical: LexicalSearch | str | os.PathLike | None = None):
        self.source = RoutedIndex.open(router, index, routing=routing, model=model, device=device, uri=uri,
                                       lexical=lexical)
        self.results: dict[str, dict[str, float]] = {}
        self.routed: dict[str, RoutedResult] = {}

    def search(self, corpus: dict[str, dict[str, str]], queries: dict[str, str], top_k: int,
               score_function: str | None = None, **kwargs) -> dict[str, dict[str, float]]:
        """``{query id: {doc id: score}}``, each query's top ``top_k``, best first; ``corpus`` must hold exactly
        the index's documents."""
        if score_function not in SCORE_FUNCTIONS:
            raise ValueError(f"score_function {score_function!r}: this index ranks by inner product of normalised "
                             f"vectors; use one of {', '.join(map(str, SCORE_FUNCTIONS[1:]))}")
        self._check_corpus(corpus)
        found = self.source.search(dict(queries), top_k, fields=False) if queries else []
        self.routed = {result.query_id: result for result in found}
        self.results = {result.query_id: dict(result.hits) for result in found}
        return self.results

    def _check_corpus(self, corpus: dict) -> None:
        index = self.source.index
        held = set(index.doc_ids)
        if len(corpus) != len(held) or not held.issuperset(corpus):
            missing = next((doc_id for doc_id in corpus if doc_id not in held), None)
            raise ValueError(f"the corpus holds {len(corpus)} documents and index {index.path} {len(held)}"
                             + (f"; {missing!r} is not in the index" if missing is not None else "")
                             + ": RoutedSearch searches the index, so pass the corpus it was built from")

    def encode(self, *args, **kwargs) -> None:
        raise NotImplementedError("RoutedSearch searches a built index (routerretriever index); call "
                                  "EvaluateRetrieval.retrieve, not encode_and_retrieve")

    def search_from_files(self, *args, **kwargs) -> dict[str, dict[str, float]]:
        raise NotImplementedError("RoutedSearch searches a built index (routerretriever index); call "
                                  "EvaluateRetrieval.retrieve, not encode_and_retrieve")
