"""The Milvus backend (``retriever.index.milvus``, ``retriever.index.backends``) on a real Milvus Lite server started
on a
temporary ``.db`` file: the same rankings as FAISS and bm25s, a self-describing collection, no half-built index,
the CLI and the routed facade on it, and on real data the acceptance check (evaluate equals the FAISS path)."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_toy_dataset

import cli
from eval.data import open_dataset
from retriever.index.backends import FaissBackend, MilvusBackend, make_backend
from retriever.index.base import IndexConfig
from retriever.index.faiss_index import build_index
from retriever.index.lexical import LexicalConfig, build_lexical_index
from retriever.index.milvus import INCOMPLETE, META, MilvusIndex, _client, default_collection
from retriever.index.milvus_build import build_milvus_index
from retriever.ranking.topk import search, search_lexical
from retriever.storage.files import ArtifactError

pytest.importorskip("pymilvus")


@pytest.fixture
def toy(data_dir):
    return open_dataset(data_dir, "toy")


@pytest.fixture
def uri(tmp_path):
    return str(tmp_path / "milvus" / "m.db")


QUERIES = ["blue whale largest animal", "python programming language", "zzzz qqqq"]


def test_dense_and_bm25_rank_as_faiss_and_bm25s(toy, toy_encoder, tmp_path, uri):
    faiss_index = build_index(toy, toy_encoder, tmp_path / "idx")
    bm25 = build_lexical_index(toy, tmp_path / "bm25")
    index = build_milvus_index(toy, toy_encoder, uri, lexical=LexicalConfig())
    assert index.name == default_collection("toy", toy_encoder.info, IndexConfig()) and len(index) == len(faiss_index)
    assert index.doc_ids == faiss_index.doc_ids
    np.testing.assert_array_equal(index.embeddings, faiss_index.embeddings)
    ids = [f"q{i}" for i in range(len(QUERIES))]
    vectors = toy_encoder.encode(QUERIES)
    want, got = search(faiss_index, vectors, ids, k=5), search(index, vectors, ids, k=5)
    assert [list(h) for h in got.values()] == [list(h) for h in want.values()]
    for q in ids:
        assert got[q] == pytest.approx(want[q], abs=1e-5)
    want, got = search_lexical(bm25, QUERIES, ids, k=5), search_lexical(index.lexical(), QUERIES, ids, k=5)
    assert got["q2"] == {} == want["q2"]  # no shared term: nothing, as bm25s's path
    assert {q: list(h) for q, h in got.items()} == {q: list(h) for q, h in want.items()}
    for q in ids:
        assert got[q] == pytest.approx(want[q], rel=1e-5)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_types(toy, toy_encoder, tmp_path, uri, index_type):
    exact = build_index(toy, toy_encoder, tmp_path / "idx")
    index = build_milvus_index(toy, toy_encoder, uri, config=IndexConfig(index_type=index_type))
    assert index.name.endswith(index_type) and index.lexical() is None
    vectors = toy_encoder.encode(QUERIES)
    assert (index.search(vectors, 3)[1] == exact.search(vectors, 3)[1]).mean() > 0.6


def test_collection_describes_itself_and_is_checked(toy, toy_encoder, other_model_dir, uri):
    from retriever.encoding.encoder import load_encoder

    index = build_milvus_index(toy, toy_encoder, uri, "mine")
    meta = index.meta
    assert meta["kind"] == "routerretriever-milvus-index" and meta["count"] == len(index)
    assert meta["model"]["fingerprint"] == toy_encoder.info.fingerprint and meta["source"]["dataset"] == "toy"
    with pytest.raises(ArtifactError, match="built with model"):
        MilvusIndex.load(uri, "mine", load_encoder(other_model_dir, device="cpu").info)
    with pytest.raises(ArtifactError, match="no index collection 'absent'"):
        MilvusIndex.load(uri, "absent")
    with pytest.raises(ValueError, match="invalid Milvus collection name 'a-b'"):
        MilvusIndex.load(uri, "a-b")
    with pytest.raises(ValueError, match="needs a file name ending in .db"):
        MilvusIndex.load(uri[:-3] + ".sqlite", "mine")
    client = _client(uri)
    client.alter_collection_properties("mine", properties={META: "{not json"})
    with pytest.raises(ArtifactError, match="not valid JSON"):
        MilvusIndex.load(uri, "mine")
    client.alter_collection_properties("mine", properties={META: json.dumps({**meta, "kind": "other"})})
    with pytest.raises(ArtifactError, match="does not describe a routerretriever-milvus-index"):
        MilvusIndex.load(uri, "mine")
    client.alter_collection_properties("mine", properties={META: json.dumps(meta)})
    client.delete("mine", ids=[0])
    with pytest.raises(ArtifactError, match="lacks 1 of its"):
        MilvusIndex.load(uri, "mine")


def test_never_replaces_what_it_does_not_own_and_leaves_no_half_build(toy, toy_encoder, uri):
    first = build_milvus_index(toy, toy_encoder, uri, "mine", overwrite=False)
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        build_milvus_index(toy, toy_encoder, uri, "mine", overwrite=False)
    client = _client(uri)
    schema = client.create_schema(auto_id=True)
    from pymilvus import DataType

    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
    client.create_collection("users_own", schema=schema)
    with pytest.raises(FileExistsError, match="is not a routerretriever index; refusing"):
        build_milvus_index(toy, toy_encoder, uri, "users_own", overwrite=True)
    assert client.has_collection("users_own")

    class Failing:  # an encoder that dies half way, as a killed build would
        info, dim = toy_encoder.info, toy_encoder.dim

        def encode(self, texts, progress=None):
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        build_milvus_index(toy, Failing(), uri, "mine", lexical=LexicalConfig(), overwrite=True)
    assert sorted(client.list_collections()) == ["mine", "users_own"]  # the old index untouched, no leftovers
    assert MilvusIndex.load(uri, "mine").meta["files"] == first.meta["files"]
    # a build killed outright leaves its incomplete collection; the next build of that name removes it
    dead = f"mine{INCOMPLETE}999999999"
    client.create_collection(dead, dimension=2)
    build_milvus_index(toy, toy_encoder, uri, "mine", overwrite=True)
    assert dead not in client.list_collections()


def test_ensure_reuses_and_rebuilds_for_bm25(toy, toy_encoder, uri, caplog):
    backend = MilvusBackend(uri)
    index, lexical = backend.ensure(toy, toy_encoder)
    assert lexical is None and index.lexical() is None
    index, lexical = backend.ensure(toy, toy_encoder, lexical=True)  # asks for BM25: rebuilt with it
    assert lexical is not None and len(lexical) == len(index)
    caplog.set_level("INFO")
    again, _ = backend.ensure(toy, toy_encoder, lexical=True)
    assert "reusing Milvus collection" in caplog.text and again.meta["files"] == index.meta["files"]


def test_backend_choice_is_checked(tmp_path):
    assert isinstance(make_backend("faiss", None, tmp_path), FaissBackend)
    with pytest.raises(ValueError, match="needs --uri"):
        make_backend("milvus")
    with pytest.raises(ValueError, match="--uri 'x.db' is for --backend milvus"):
        make_backend("faiss", "x.db")
    with pytest.raises(ValueError, match="unknown index backend 'qdrant'"):
        make_backend("qdrant")


def test_routed_search_on_milvus_equals_faiss(lexical_world, toy_encoder, tmp_path):
    from retriever.router_retriever import RouterRetriever

    store = lexical_world["store"]
    rr = RouterRetriever.load(store.root, "default", model=str(store.base.id))
    dataset, index, lexical = (lexical_world[k]["toy"] for k in ("datasets", "indexes", "lexical"))
    milvus, _ = MilvusBackend(str(tmp_path / "m.db")).ensure(dataset, toy_encoder, lexical=True)
    queries = dataset.split("test").queries
    want = rr.search(queries, k=5, index=index, lexical=lexical)
    got = rr.search(queries, k=5, index=milvus)
    assert [(h.system, [d for d, _ in h.hits]) for h in got] == [(h.system, [d for d, _ in h.hits]) for h in want]


def test_cli_index_and_search_on_milvus(data_dir, toy_model_dir, tmp_path):
    write_toy_dataset(data_dir, "second")
    uri = str(tmp_path / "cli.db")
    runner = CliRunner()
    base = ["-q", "index", "--data-dir", str(data_dir), "--model", str(toy_model_dir), "--backend", "milvus",
            "--uri", uri]
    result = runner.invoke(cli.main, [*base, "--dataset", "toy", "--output", "toy_index"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{uri}#toy_index\t20 documents\tflat")
    again = runner.invoke(cli.main, [*base, "--dataset", "second", "--output", "toy_index"])
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    found = runner.invoke(cli.main, ["search", "--backend", "milvus", "--uri", uri, "--index", "toy_index",
                                     "--model", str(toy_model_dir), "--query", "blue whale", "--json"])
    assert found.exit_code == 0, found.output
    hit = json.loads(found.output)
    assert hit["system"] == "base" and len(hit["hits"]) == 10
    wrong = runner.invoke(cli.main, ["-q", "index", "--data-dir", str(data_dir), "--dataset", "toy", "--uri", uri])
    assert wrong.exit_code == 1 and "is for --backend milvus" in wrong.output


@pytest.mark.realdata
def test_cli_evaluate_on_milvus_equals_faiss(real_data_dir, tmp_path):
    """The acceptance check: base, bm25 and hybrid:base on AILA within 0.001 of the FAISS path (and the same
    top-10 for exact search)."""
    runner = CliRunner()
    common = ["-q", "evaluate", "--data-dir", str(real_data_dir), "--dataset", "aila2019-statutes",
              "--system", "base", "--system", "bm25", "--system", "hybrid:base", "--cache-dir", str(tmp_path / "c")]
    rows = {}
    for name, extra in (("faiss", []), ("milvus", ["--backend", "milvus", "--uri", str(tmp_path / "m.db")])):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(cli.main, [*common, *extra, "--output-json", str(out), "--run-dir",
                                          str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        rows[name] = {r["system"]: r["ndcg@10"] for r in json.loads(out.read_text())["results"]}
    assert set(rows["milvus"]) == {"base", "bm25", "hybrid:base"}
    for system, score in rows["faiss"].items():
        assert rows["milvus"][system] == pytest.approx(score, abs=0.001), system
    runs = [(tmp_path / n / "aila2019-statutes.test.base.trec").read_text().splitlines() for n in ("faiss", "milvus")]
    top10 = [[line.split()[2] for line in run if int(line.split()[3]) <= 10] for run in runs]
    assert top10[0] == top10[1]
    assert os.path.getsize(tmp_path / "m.db") > 0 or (tmp_path / "m.db").is_dir()


def test_cli_evaluate_and_train_on_milvus_equal_faiss(lexical_world, toy_model_dir, tmp_path):
    """Routers over every system evaluate alike on both backends, and an expert trains from Milvus's vectors."""
    root, runner = lexical_world["root"], CliRunner()
    common = ["-q", "evaluate", "--data-dir", str(root / "beir"), "--dataset", "toy", "--dataset", "other",
              "--router", str(root / "router"), "--model", str(toy_model_dir), "--system", "default",
              "--system", "bm25", "--system", "hybrid:toy-expert", "--system", "instance-oracle"]
    rows = {}
    for name, extra in (("faiss", ["--cache-dir", str(tmp_path / "c")]),
                        ("milvus", ["--backend", "milvus", "--uri", str(tmp_path / "m.db")])):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(cli.main, [*common, *extra, "--output-json", str(out)])
        assert result.exit_code == 0, result.output
        rows[name] = [(r["dataset"], r["system"], r["ndcg@10"]) for r in json.loads(out.read_text())["results"]]
    assert len(rows["milvus"]) == 8
    for (d, s, want), (d2, s2, got) in zip(rows["faiss"], rows["milvus"], strict=True):
        assert (d, s) == (d2, s2) and got == pytest.approx(want, abs=1e-6)
    trained = runner.invoke(cli.main, [
        "-q", "train-expert", "--data-dir", str(root / "beir"), "--dataset", "toy", "--router", str(tmp_path / "r"),
        "--name", "on-milvus", "--model", str(toy_model_dir), "--config", '{"max_steps": 2}', "--backend", "milvus",
        "--uri", str(tmp_path / "m.db")])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "r" / "experts" / "on-milvus" / "expert.json").is_file()
