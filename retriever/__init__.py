"""The search path a deployed service needs: base encoder, corpus indexes, expert encoder, routers, the router
directory and the ``RouterRetriever`` facade. Imports no other package of this project. Subpackages, lowest first
(each imports only those before it; ``tests/test_layout.py``):

- ``storage/``  — atomic files, self-describing artifacts and checksums, the index cache, the SQLite document store.
- ``encoding/`` — the frozen base encoder (offline, fingerprinted), LoRA layers, ``MultiExpertEncoder`` (experts
                  chosen per row, thread-safe).
- ``index/``    — dense indexes (FAISS directories, Milvus collections), BM25 (bm25s), collection files, add/delete
                  as new versions, Ray encoding, and ``IndexBackend``: the one way callers build, open and change them.
- ``ranking/``  — top-k search (``rank``: the one place self-hits are dropped), systems and fusion, ``auto:base``.
- ``routers/``  — the router interface and registry, one module per router, settings, calibration on folds, and
                  ``RouterDirectory`` (a router directory's layout).
- ``router_retriever`` — ``RouterRetriever``, the facade: route, encode, search, documents.
- ``adapters/`` — the facade in other libraries' shapes (BEIR, LangChain, LlamaIndex, sentence-transformers).
- ``service/``  — the search service above it (FastAPI app, dynamic batching, index versions, Ray Serve).
- ``lazy``      — the first-use imports of the package ``__init__``s.

Tested in ``tests/test_index.py``, ``test_lexical.py``, ``test_milvus.py``, ``test_ray.py``, ``test_ranking.py``,
``test_routers.py``, ``test_experts.py`` (LoRA layers against peft), ``test_changes.py``, ``test_backends.py`` and
``test_bad_input.py``.
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "ArtifactError": "retriever.storage.files",
    "safe_name": "retriever.storage.files",
    "DEFAULT_MODEL": "retriever.encoding.encoder",
    "Encoder": "retriever.encoding.encoder",
    "ModelInfo": "retriever.encoding.encoder",
    "load_encoder": "retriever.encoding.encoder",
    "BASE_EXPERT": "retriever.encoding.expert_encoder",
    "MultiExpertEncoder": "retriever.encoding.expert_encoder",
    "Collection": "retriever.index.collection",
    "open_collection": "retriever.index.collection",
    "CorpusIndex": "retriever.index.faiss_index",
    "IndexConfig": "retriever.index.base",
    "IndexType": "retriever.index.base",
    "Metric": "retriever.index.base",
    "build_index": "retriever.index.faiss_index",
    "ensure_index": "retriever.index.faiss_index",
    "RouterDirectory": "retriever.routers.directory",
    "RoutedResult": "retriever.router_retriever",
    "RouterRetriever": "retriever.router_retriever",
    "ROUTERS": "retriever.routers",
    "FixedRouter": "retriever.routers",
    "Router": "retriever.routers",
    "Routing": "retriever.routers",
    "RoutingSpace": "retriever.routers",
    "RoutingData": "retriever.routers",
    "load_router": "retriever.routers",
    "Results": "retriever.ranking.topk",
    "rank": "retriever.ranking.topk",
    "search": "retriever.ranking.topk",
    "default_cache_dir": "retriever.storage.cache",
    "faiss_gpus": "retriever.index.faiss_index",
    "PRECISIONS": "retriever.encoding.encoder",
    "BASE": "retriever.routers",
    "SIMILARITIES": "retriever.routers",
    "best_threshold": "retriever.routers",
    "fold_gains": "retriever.routers",
    "fit_router": "retriever.routers",
    "UNFAMILIAR_POLICIES": "retriever.routers",
    "without_expert": "retriever.routers",
    "fold_routings": "retriever.routers",
    "fold_score": "retriever.routers",
    "in_domain_folds": "retriever.routers",
    "novelty_kinds": "retriever.routers",
    "buildable_kinds": "retriever.routers",
    "LexicalConfig": "retriever.index.lexical",
    "LexicalIndex": "retriever.index.lexical",
    "build_lexical_index": "retriever.index.lexical",
    "ensure_lexical_index": "retriever.index.lexical",
    "FusionSettings": "retriever.ranking.systems",
    "SystemSet": "retriever.ranking.systems",
    "search_lexical": "retriever.ranking.topk",
    "IndexBackend": "retriever.index.backends",
    "FaissBackend": "retriever.index.backends",
    "MilvusBackend": "retriever.index.backends",
    "make_backend": "retriever.index.backends",
    "MilvusIndex": "retriever.index.milvus",
    "build_milvus_index": "retriever.index.milvus_build",
    "ensure_milvus_index": "retriever.index.milvus_build",
    "RayEncoder": "retriever.index.ray_encoder",
})
