"""Corpus indexes: ``base`` (``IndexConfig``, ``DenseIndex``, ``LexicalSearch``: what every index offers),
``faiss_index`` (the index directory: exact, HNSW, IVF; CPU, FAISS GPU or torch), ``changes`` (adding to and
deleting from a named index directory as a new version), ``collection`` (your own documents: JSONL, CSV, TSV,
Parquet files), ``lexical`` (BM25 with bm25s, beside the dense index), ``milvus`` (dense, BM25 and the documents'
text in one Milvus collection), ``milvus_build`` (building and reusing one) and ``milvus_changes`` (adding and
deleting its documents), ``ray_encoder`` (corpus encoding on Ray actors) and ``backends`` (``IndexBackend``: the one
way callers build, cache, open and change indexes and find an index's lexical side; ``backend_for`` an index or
path). Imports ``retriever.storage`` and ``retriever.encoding``. Tested in ``tests/test_index.py``,
``test_lexical.py``, ``test_collections.py``, ``test_changes.py``, ``test_milvus.py``, ``test_milvus_changes.py``,
``test_ray.py`` and ``test_backends.py`` (the contract both backends pass).
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "BACKENDS": "retriever.index.backends",
    "Collection": "retriever.index.collection",
    "open_collection": "retriever.index.collection",
    "CorpusIndex": "retriever.index.faiss_index",
    "DenseIndex": "retriever.index.base",
    "FaissBackend": "retriever.index.backends",
    "IndexBackend": "retriever.index.backends",
    "IndexConfig": "retriever.index.base",
    "IndexType": "retriever.index.base",
    "LexicalSearch": "retriever.index.base",
    "LexicalConfig": "retriever.index.lexical",
    "LexicalIndex": "retriever.index.lexical",
    "Metric": "retriever.index.base",
    "MilvusBackend": "retriever.index.backends",
    "MilvusIndex": "retriever.index.milvus",
    "RayEncoder": "retriever.index.ray_encoder",
    "backend_for": "retriever.index.backends",
    "build_index": "retriever.index.faiss_index",
    "change_index": "retriever.index.changes",
    "build_lexical_index": "retriever.index.lexical",
    "build_milvus_index": "retriever.index.milvus_build",
    "ensure_index": "retriever.index.faiss_index",
    "ensure_lexical_index": "retriever.index.lexical",
    "ensure_milvus_index": "retriever.index.milvus_build",
    "faiss_gpus": "retriever.index.faiss_index",
    "make_backend": "retriever.index.backends",
})
