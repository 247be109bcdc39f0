"""GPU checks (``pytest -m gpu``): run on a CUDA machine; skipped elsewhere and by default.

Imports only ``retriever`` (torch, numpy, faiss), so the file runs where the evaluation stack is not installed.
"""

import numpy as np
import pytest
from conftest import assert_device_search_agrees

from retriever.index import CorpusIndex, IndexConfig


@pytest.mark.gpu
def test_gpu_search_matches_faiss(tmp_path):
    """On a CUDA machine: 50,000 random unit vectors, 2,000 queries; torch top-k on the GPU against FAISS."""
    import faiss
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((50_000, 384)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[rng.choice(len(docs), 2_000, replace=False)] + 0.1 * rng.standard_normal((2_000, 384))
    flat = faiss.IndexFlatIP(384)
    flat.add(docs)
    meta = {"dim": 384, "config": IndexConfig().to_json()}
    index = CorpusIndex(tmp_path, meta, [f"d{i}" for i in range(len(docs))], docs, flat)
    assert_device_search_agrees(index, "cuda", queries.astype(np.float32))
