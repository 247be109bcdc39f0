"""The search path: base encoder, shared FAISS corpus index, and top-k search.

- ``encoder``   — loads the frozen base sentence-transformers model (offline) and encodes normalised vectors.
- ``index``     — the self-describing corpus index directory (FAISS: exact inner product, HNSW, IVF).
- ``search``    — top-k search; ``rank`` is the single place where self-hits are removed.
- ``artifacts`` — atomic directory writes, JSON metadata and checksums shared by every saved artifact.

Tested in ``tests/test_index.py``, ``tests/test_search.py`` and ``tests/test_cli.py``.
"""

from retriever.artifacts import ArtifactError
from retriever.encoder import DEFAULT_MODEL, Encoder, ModelInfo, load_encoder
from retriever.index import CorpusIndex, IndexConfig, IndexType, Metric, build_index, ensure_index
from retriever.search import Results, rank, search

__all__ = [
    "DEFAULT_MODEL",
    "ArtifactError",
    "CorpusIndex",
    "Encoder",
    "IndexConfig",
    "IndexType",
    "Metric",
    "ModelInfo",
    "Results",
    "build_index",
    "ensure_index",
    "load_encoder",
    "rank",
    "search",
]
