"""Top-k search over a corpus index. Every search path in the library ends in ``rank``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retriever.index.base import DenseIndex, LexicalSearch

__all__ = ["Results", "rank", "search", "search_lexical"]

Results = dict[str, dict[str, float]]  # query id -> {doc id: score}, best first (BEIR's result format)


def rank(
    query_ids: Sequence[str], scores: np.ndarray, rows: np.ndarray, doc_ids: Sequence[str], k: int
) -> Results:
    """Map raw search rows to doc ids, drop each query's own id (a self-hit), keep the top ``k``.

    The searcher must have asked for ``k + 1`` rows so that dropping a self-hit still leaves ``k``.
    """
    results: Results = {}
    for query_id, row_scores, row_ids in zip(query_ids, scores, rows, strict=True):
        hits: dict[str, float] = {}
        for score, row in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
            if row < 0:
                break  # FAISS pads with -1 when fewer than k were found
            doc_id = doc_ids[row]
            if doc_id == query_id:
                continue
            hits[doc_id] = score
            if len(hits) == k:
                break
        results[query_id] = hits
    return results


def search(index: DenseIndex, query_vectors: np.ndarray, query_ids: Sequence[str], k: int = 10) -> Results:
    """Top-``k`` documents for each query vector; a document whose id equals the query id is never returned."""
    return _ranked(index, query_vectors, query_ids, k, "query vectors")


def search_lexical(index: LexicalSearch, texts: Sequence[str], query_ids: Sequence[str], k: int = 10) -> Results:
    """Top-``k`` BM25 documents (``retriever.index.lexical.LexicalIndex``) for each query text; self-hits dropped and
    documents sharing no term with the query left out, by the same ``rank``."""
    return _ranked(index, list(texts), query_ids, k, "query texts")


def _ranked(index: DenseIndex | LexicalSearch, queries, query_ids: Sequence[str], k: int, what: str) -> Results:
    """Ask ``index`` (dense or lexical: ``search(queries, k) -> (scores, rows)``) for one more than ``k`` rows per
    query, so that ``rank`` can drop a self-hit and still keep ``k``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(query_ids) != len(queries):
        raise ValueError(f"{len(query_ids)} query ids for {len(queries)} {what}")
    if len(query_ids) == 0:
        return {}
    scores, rows = index.search(queries, k + 1)
    return rank(query_ids, scores, rows, index.doc_ids, k)
