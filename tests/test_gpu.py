"""GPU checks (``pytest -m gpu``): run on a CUDA machine; skipped elsewhere and by default.

Imports only ``retriever`` (torch, numpy, faiss), so the file runs where the evaluation stack is not installed.
"""

import numpy as np
import pytest
from conftest import assert_device_search_agrees

from retriever.index.base import IndexConfig
from retriever.index.faiss_index import CorpusIndex


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


@pytest.mark.gpu
def test_faiss_gpu_index_matches_cpu(tmp_path):
    """With a FAISS GPU build (the ``gpu`` extra): ``to("cuda")`` searches with FAISS on the GPU, same top 10."""
    import faiss

    from retriever.index.faiss_index import faiss_gpus

    if faiss_gpus() == 0:
        pytest.skip("the installed FAISS has no GPU support")
    rng = np.random.default_rng(1)
    docs = rng.standard_normal((20_000, 384)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(384)
    flat.add(docs)
    index = CorpusIndex(tmp_path, {"dim": 384, "config": IndexConfig().to_json()}, [str(i) for i in range(20_000)],
                        docs, flat)
    queries = (docs[:500] + 0.1 * rng.standard_normal((500, 384))).astype(np.float32)
    want_scores, want_rows = index.search(queries, 10)
    assert index.to("cuda").engine == "faiss-gpu"
    scores, rows = index.search(queries, 10)
    np.testing.assert_allclose(scores, want_scores, atol=1e-4)
    assert (rows == want_rows).mean() > 0.99


@pytest.mark.gpu
def test_autocast_corpus_encoding_on_cuda():
    """bf16 / fp16 autocast encoding on the GPU stays within 0.999 cosine of the fp32 path."""
    import torch

    from retriever.encoding.encoder import load_encoder

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    texts = [f"passage {i}: " + "the quick brown fox jumps over the lazy dog near the river bank " * (1 + i % 9)
             for i in range(300)]
    fp32 = load_encoder(device="cuda").encode(texts)
    for precision in ("bf16", "fp16"):
        vectors = load_encoder(device="cuda", precision=precision).encode(texts, batch_size=128)
        assert (vectors * fp32).sum(axis=1).min() >= 0.999
