"""The search path: base encoder, shared FAISS corpus index, expert encoder, routers, and the facade.

- ``encoder``          — loads the frozen base sentence-transformers model (offline); normalised vectors.
- ``index``            — the self-describing corpus index directory (FAISS: exact inner product, HNSW, IVF).
- ``search``           — top-k search; ``rank`` is the single place where self-hits are removed.
- ``lora``, ``experts`` — LoRA query experts on one base model, chosen per call (thread-safe).
- ``routers``          — pilot / classifier / dataset / fixed routers behind one interface and a registry.
- ``router_retriever`` — ``RouterRetriever``: route, encode, search.
- ``artifacts``        — atomic writes, JSON metadata and checksums shared by every saved artifact.

Tested in ``tests/test_index.py``, ``test_search.py``, ``test_experts.py``, ``test_routing.py``, ``test_cli.py``.
"""

from retriever.artifacts import ArtifactError
from retriever.encoder import DEFAULT_MODEL, Encoder, ModelInfo, load_encoder
from retriever.experts import BASE_EXPERT, MultiExpertEncoder
from retriever.index import CorpusIndex, IndexConfig, IndexType, Metric, build_index, ensure_index
from retriever.router_retriever import RoutedResult, RouterRetriever
from retriever.routers import ROUTERS, Router, Routing, RoutingData, load_router
from retriever.search import Results, rank, search

__all__ = [
    "BASE_EXPERT",
    "DEFAULT_MODEL",
    "ROUTERS",
    "ArtifactError",
    "CorpusIndex",
    "Encoder",
    "IndexConfig",
    "IndexType",
    "Metric",
    "ModelInfo",
    "MultiExpertEncoder",
    "Results",
    "RoutedResult",
    "Router",
    "RouterRetriever",
    "Routing",
    "RoutingData",
    "build_index",
    "ensure_index",
    "load_encoder",
    "load_router",
    "rank",
    "search",
]
