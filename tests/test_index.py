import json
import os

import numpy as np
import pytest
from conftest import assert_device_search_agrees

from eval.data import open_dataset
from retriever.encoding.encoder import Encoder, load_encoder
from retriever.index.base import IndexConfig, IndexType
from retriever.index.faiss_index import CorpusIndex, build_index, ensure_index
from retriever.ranking.topk import search
from retriever.storage.files import ArtifactError


@pytest.fixture
def toy(data_dir):
    return open_dataset(data_dir, "toy")


def test_index_describes_itself(toy, toy_encoder, tmp_path):
    index = build_index(toy, toy_encoder, tmp_path / "idx", source={"dataset": "toy"})
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["kind"] == "routerretriever-corpus-index"
    assert meta["format_version"] == 1
    assert meta["model"] == {"id": toy_encoder.info.id, "fingerprint": toy_encoder.info.fingerprint, "dim": 32}
    assert (meta["dim"], meta["metric"], meta["index_type"], meta["count"]) == (32, "inner_product", "flat", 20)
    assert set(meta["files"]) == {"embeddings.npy", "doc_ids.json", "docs.sqlite"}
    assert meta["library_version"]
    assert len(index) == 20
    stored = np.load(tmp_path / "idx" / "embeddings.npy", allow_pickle=False)
    expected = toy_encoder.encode([doc.content() for doc in toy.corpus()])
    np.testing.assert_allclose(stored, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)


def test_exact_search_matches_brute_force(toy, toy_encoder, tmp_path):
    index = build_index(toy, toy_encoder, tmp_path / "idx")
    queries = ["sunlight electricity", "moon gravity"]
    vectors = toy_encoder.encode(queries)
    results = search(index, vectors, ["a", "b"], k=5)
    scores = vectors @ index.embeddings.T
    for row, qid in enumerate(["a", "b"]):
        top = np.argsort(-scores[row], kind="stable")[:5]
        assert list(results[qid]) == [index.doc_ids[i] for i in top]
        np.testing.assert_allclose(list(results[qid].values()), scores[row][top], rtol=1e-5)


def test_device_search_matches_faiss(toy, toy_encoder, tmp_path):
    index = build_index(toy, toy_encoder, tmp_path / "idx")
    assert_device_search_agrees(index, "cpu", toy_encoder.encode(["sunlight electricity", "moon gravity"]))
    loaded = CorpusIndex.load(tmp_path / "idx", toy_encoder.info, device="cpu")
    vectors = toy_encoder.encode(["whales in the ocean"])
    on_device, on_faiss = search(loaded, vectors, ["q"], k=3)["q"], search(index, vectors, ["q"], k=3)["q"]
    assert list(on_device) == list(on_faiss)
    assert list(on_device.values()) == pytest.approx(list(on_faiss.values()), rel=1e-5)
    hnsw = build_index(toy, toy_encoder, tmp_path / "hnsw", IndexConfig(index_type="hnsw"))
    with pytest.raises(ValueError, match="device search is exact and needs a flat index; .* is hnsw"):
        hnsw.to("cpu")
    with pytest.raises(ValueError, match="cannot use device 'tpu7'"):
        index.to("tpu7")


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_save_and_reload(toy, toy_encoder, tmp_path, index_type):
    config = IndexConfig(index_type=index_type, ivf_nlist=2, ivf_nprobe=2)
    built = build_index(toy, toy_encoder, tmp_path / "idx", config)
    assert (tmp_path / "idx" / "index.faiss").is_file()
    reloaded = CorpusIndex.load(tmp_path / "idx", toy_encoder.info)
    assert reloaded.config == config
    vectors = toy_encoder.encode(["whales in the ocean"])
    exact = build_index(toy, toy_encoder, tmp_path / "exact")
    # 20 documents and full probing: the approximate index must find what the exact one finds.
    approx_hits, exact_hits = search(reloaded, vectors, ["q"], k=3)["q"], search(exact, vectors, ["q"], k=3)["q"]
    assert list(approx_hits) == list(exact_hits)
    assert list(approx_hits.values()) == pytest.approx(list(exact_hits.values()), rel=1e-5)
    assert search(built, vectors, ["q"], k=3) == search(reloaded, vectors, ["q"], k=3)


def test_bad_index_config():
    with pytest.raises(ValueError, match="unknown index type 'annoy'; valid: flat, hnsw, ivf"):
        IndexConfig(index_type="annoy")
    with pytest.raises(ValueError, match="hnsw_m must be a positive integer, got 0"):
        IndexConfig(hnsw_m=0)
    assert IndexConfig(index_type="hnsw").index_type is IndexType.HNSW


def test_loading_with_another_model_is_an_error(toy, toy_encoder, other_model_dir, tmp_path):
    build_index(toy, toy_encoder, tmp_path / "idx")
    other = load_encoder(other_model_dir, device="cpu")
    with pytest.raises(ArtifactError, match=r"built with model '.*toy32' \(dim 32.*query model is '.*toy16' \(dim 16"):
        CorpusIndex.load(tmp_path / "idx", other.info)


def test_corrupted_file_is_detected(toy, toy_encoder, tmp_path):
    build_index(toy, toy_encoder, tmp_path / "idx")
    with open(tmp_path / "idx" / "doc_ids.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for .*doc_ids\.json"):
        CorpusIndex.load(tmp_path / "idx")


def test_not_an_index(tmp_path):
    with pytest.raises(ArtifactError, match=r"not a routerretriever-corpus-index: .*index\.json does not exist"):
        CorpusIndex.load(tmp_path)


class ExplodingEncoder:
    """Fails after the first chunk, as an interrupted build would."""

    def __init__(self, inner):
        self.inner, self.info, self.dim, self.precision, self.calls = inner, inner.info, inner.dim, "fp32", 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        if self.calls > 1:
            raise KeyboardInterrupt
        return self.inner.encode(texts, **kwargs)


def test_interrupted_build_keeps_previous_index(toy, toy_encoder, tmp_path, monkeypatch):
    path = tmp_path / "out" / "idx"
    build_index(toy, toy_encoder, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    monkeypatch.setattr("retriever.index.faiss_index.CHUNK_SIZE", 8)
    with pytest.raises(KeyboardInterrupt):
        build_index(toy, ExplodingEncoder(toy_encoder), path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert os.listdir(path.parent) == ["idx"]  # no temporary directory left behind


def test_interrupted_first_build_leaves_nothing(toy, toy_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr("retriever.index.faiss_index.CHUNK_SIZE", 8)
    with pytest.raises(KeyboardInterrupt):
        build_index(toy, ExplodingEncoder(toy_encoder), tmp_path / "out" / "idx")
    assert os.listdir(tmp_path / "out") == []


class CountingEncoder(ExplodingEncoder):
    def encode(self, texts, **kwargs):
        self.calls += 1
        return self.inner.encode(texts, **kwargs)


def test_ensure_index_reuses_and_rebuilds_when_corpus_changes(toy, toy_encoder, tmp_path, data_dir):
    encoder = CountingEncoder(toy_encoder)
    first = ensure_index(toy, encoder, tmp_path / "cache")
    assert encoder.calls == 1
    second = ensure_index(toy, encoder, tmp_path / "cache")
    assert encoder.calls == 1 and second.path == first.path
    import gzip
    with gzip.open(toy.corpus_path, "at", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "new", "title": "", "text": "a new document"}) + "\n")
    third = ensure_index(open_dataset(data_dir, "toy"), encoder, tmp_path / "cache")
    assert encoder.calls == 2 and len(third) == 21


def test_autocast_encoding_is_within_cosine_of_fp32_and_cached_apart(minilm, real_data_dir, tmp_path):
    """bf16 / fp16 corpus encoding (tokenised once, length-sorted, autocast) against fp32 on real passages, and its
    index: a cache entry of its own that records the precision, never mistaken for the fp32 one."""
    dataset = open_dataset(real_data_dir, "scifact")
    docs = [doc for _, doc in zip(range(48), dataset.corpus(), strict=False)]
    texts = [doc.content() for doc in docs]
    fp32 = minilm.encode(texts)
    for precision in ("bf16", "fp16"):
        fast = load_encoder(device="cpu", precision=precision)
        vectors = fast.encode(texts, batch_size=16)
        assert vectors.dtype == np.float32 and vectors.shape == fp32.shape
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        assert (vectors * fp32).sum(axis=1).min() >= 0.999
        assert not np.array_equal(vectors, fp32)  # it did run in the lower precision
    fast = load_encoder(device="cpu", precision="bf16")
    built = build_index(docs, fast, tmp_path / "bf16")
    assert built.meta["precision"] == "bf16"
    np.testing.assert_array_equal(np.asarray(built.embeddings), fast.encode(texts))  # chunked = one call
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of fp32, bf16, fp16"):
        load_encoder(device="cpu", precision="fp8")


def test_cache_entries_differ_by_precision(toy, toy_encoder, tmp_path):
    fp32 = ensure_index(toy, toy_encoder, tmp_path)
    bf16 = ensure_index(toy, Encoder(toy_encoder.model, toy_encoder.info, toy_encoder.path, precision="bf16"), tmp_path)
    assert fp32.path != bf16.path and bf16.path.name.endswith("-bf16")
    assert (fp32.meta["precision"], bf16.meta["precision"]) == ("fp32", "bf16")
    assert ensure_index(toy, toy_encoder, tmp_path).path == fp32.path


def test_empty_corpus_refused(toy_encoder, tmp_path):
    with pytest.raises(ValueError, match="cannot index an empty corpus"):
        build_index([], toy_encoder, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
