"""From vectors and texts to ranked documents: ``topk`` (dense and BM25 top-k; ``rank`` is the one place
self-hits are removed), ``systems`` (what answers a query: a dense expert, ``bm25``, ``hybrid:<expert>`` fusion or
``auto:<expert>``), ``unfamiliar`` (whether an unfamiliar corpus's BM25 side is trusted, from agreement, a third
ranker's estimate and the base's decisiveness) and ``third_opinion`` (that third ranker: the base's mean input token
embeddings). Imports ``retriever.storage``, ``retriever.encoding`` and ``retriever.index``. Tested in
``tests/test_ranking.py``, ``tests/test_lexical.py`` and ``tests/test_third_opinion.py``.
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "AUTO": "retriever.ranking.systems",
    "BM25": "retriever.ranking.systems",
    "Results": "retriever.ranking.topk",
    "FusionSettings": "retriever.ranking.systems",
    "SystemSet": "retriever.ranking.systems",
    "rank": "retriever.ranking.topk",
    "run_system": "retriever.ranking.systems",
    "search": "retriever.ranking.topk",
    "search_lexical": "retriever.ranking.topk",
    "base_gap": "retriever.ranking.unfamiliar",
    "top_agreement": "retriever.ranking.unfamiliar",
    "trusts_lexical": "retriever.ranking.unfamiliar",
})
