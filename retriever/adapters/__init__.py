"""The routed retriever in other libraries' shapes, above the ``RouterRetriever`` facade: each module imports its
library (an optional extra) only when used.

- ``beir``       — ``RoutedSearch``: a BEIR ``BaseSearch`` for ``EvaluateRetrieval`` (beir, a core dependency).
- ``langchain``  — ``LangChainRetriever``: a LangChain ``BaseRetriever`` returning ``Document``s (extra ``langchain``).
- ``llamaindex`` — ``LlamaIndexRetriever``: a LlamaIndex ``BaseRetriever`` returning ``NodeWithScore``s (extra
                   ``llamaindex``).
- ``routed``     — what they share: ``RoutedIndex`` (a ``RouterRetriever`` over one index opened once: a FAISS
                   directory or a Milvus collection) and each hit as text plus doc id, score and answering system.
- ``st_model``   — ``RoutedEncoder``: the routed model (router + experts) as a sentence-transformers module, what
                   ``routerretriever export`` writes; ``verify_export`` / ``load_routed_model`` check its checksums.

Tested in ``tests/test_adapters.py`` and ``tests/test_export.py`` (against the real installed packages).
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "RoutedSearch": "retriever.adapters.beir",
    "LangChainRetriever": "retriever.adapters.langchain",
    "LlamaIndexRetriever": "retriever.adapters.llamaindex",
    "RoutedHit": "retriever.adapters.routed",
    "RoutedIndex": "retriever.adapters.routed",
    "RoutedEncoder": "retriever.adapters.st_model",
    "load_routed_model": "retriever.adapters.st_model",
    "verify_export": "retriever.adapters.st_model",
})
