"""``retriever.adapters`` against the real beir, langchain-core and llama-index-core: BEIR's ``EvaluateRetrieval``
over ``RoutedSearch`` scores what ``routerretriever evaluate`` scores (toy routers; real data for base, BM25 and the
hybrid), the LangChain and LlamaIndex retrievers return what the facade finds with the documents' text, over FAISS
and Milvus, and the README's snippets run."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
from pathlib import Path

import pytest
from beir.datasets.data_loader import GenericDataLoader
from beir.retrieval.evaluation import EvaluateRetrieval
from click.testing import CliRunner
from conftest import REPO

import cli
from retriever.adapters import LangChainRetriever, LlamaIndexRetriever, RoutedSearch
from retriever.router_retriever import RouterRetriever

ROUTERS = ("pilot", "classifier", "dataset", "default")
QUERY = "what is known about insulin and blood sugar"


def beir_folder(dataset: Path, target: Path) -> Path:
    """``dataset`` (BEIR layout, corpus maybe gzipped) as ``GenericDataLoader`` reads it: a plain corpus.jsonl."""
    (target / "qrels").mkdir(parents=True)
    gz = dataset / "corpus.jsonl.gz"
    with (gzip.open(gz, "rt", encoding="utf-8") if gz.exists() else open(dataset / "corpus.jsonl",
                                                                         encoding="utf-8")) as source:
        (target / "corpus.jsonl").write_text(source.read(), encoding="utf-8")
    shutil.copy(dataset / "queries.jsonl", target)
    shutil.copy(dataset / "qrels" / "test.tsv", target / "qrels")
    return target


def cli_ndcg(index: Path, dataset: Path, systems, *extra) -> dict[str, float]:
    """``routerretriever evaluate --index ... --json``: nDCG@10 per system."""
    args = ["-q", "evaluate", "--index", str(index), "--queries", str(dataset / "queries.jsonl"), "--qrels",
            str(dataset / "qrels" / "test.tsv"), *extra, "--json"]
    for system in systems:
        args += ["--system", system]
    result = CliRunner().invoke(cli.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {row["system"]: row["ndcg@10"] for row in json.loads(result.stdout)["results"]}


def beir_ndcg(search: RoutedSearch, folder: Path, **evaluator) -> tuple[float, dict]:
    """BEIR's own flow: load, retrieve through ``search``, evaluate."""
    corpus, queries, qrels = GenericDataLoader(str(folder)).load(split="test")
    beir = EvaluateRetrieval(search, **evaluator)
    results = beir.retrieve(corpus, queries)
    ndcg, _, _, _ = beir.evaluate(qrels, results, beir.k_values)
    return ndcg["NDCG@10"], results


def fixed(encoder, system: str, fusion=None) -> RouterRetriever:
    """A retriever that sends every query to ``system`` (base, bm25, hybrid:base)."""
    from retriever.encoding.expert_encoder import MultiExpertEncoder
    from retriever.routers import FixedRouter

    return RouterRetriever(MultiExpertEncoder(encoder), FixedRouter(["base", "bm25", "hybrid:base"],
                                                                    {"expert": system}), fusion)


def test_beir_scores_what_evaluate_scores_for_every_router(lexical_world, toy_model_dir, tmp_path):
    root = lexical_world["root"]
    index, dataset, router = root / "idx" / "toy", root / "beir" / "toy", root / "router"
    expected = cli_ndcg(index, dataset, ["base", *ROUTERS], "--router", str(router), "--model", str(toy_model_dir))
    folder = beir_folder(dataset, tmp_path / "toy")
    chosen = set()
    for kind in ROUTERS:
        search = RoutedSearch(router, index, routing=kind, model=str(toy_model_dir))
        ndcg, results = beir_ndcg(search, folder)
        assert ndcg == pytest.approx(expected[kind], abs=1e-6), kind
        assert set(results) == set(search.routed) and all(len(hits) == 20 for hits in results.values())
        chosen |= {result.system for result in search.routed.values()}
    assert any(s.endswith("-expert") for s in chosen)  # the path through an expert (and its hybrid) is taken
    base, _ = beir_ndcg(RoutedSearch(None, index, model=str(toy_model_dir)), folder, k_values=[1, 10, 100])
    assert base == pytest.approx(expected["base"], abs=1e-6)


@pytest.mark.realdata
def test_beir_scores_what_evaluate_scores_on_real_data(real_data_dir, minilm, tmp_path):
    """aila2019-statutes (197 documents: more than the 100 of each list a hybrid fuses, fewer than the 1000 BEIR
    asks for by default) with MiniLM: base, BM25 and the hybrid."""
    from eval.data import open_dataset
    from retriever.index.faiss_index import build_index
    from retriever.index.lexical import build_lexical_index

    dataset = open_dataset(real_data_dir, "aila2019-statutes")
    index = build_index(dataset, minilm, tmp_path / "aila")
    build_lexical_index(dataset, tmp_path / "aila-bm25")
    systems = ("base", "bm25", "hybrid:base")
    expected = cli_ndcg(tmp_path / "aila", real_data_dir / "aila2019-statutes", systems)
    folder = beir_folder(real_data_dir / "aila2019-statutes", tmp_path / "beir")
    for system in systems:
        search = RoutedSearch(fixed(minilm, system), index)
        ndcg, results = beir_ndcg(search, folder)
        assert ndcg == pytest.approx(expected[system], abs=1e-6), system
        if system == "base":
            assert {len(hits) for hits in results.values()} == {197}  # BEIR's top 1000: every document


def test_beir_refuses_another_corpus_and_bad_settings(lexical_world, toy_model_dir, tmp_path):
    root = lexical_world["root"]
    search = RoutedSearch(None, root / "idx" / "toy", model=str(toy_model_dir))
    corpus, queries, _ = GenericDataLoader(str(beir_folder(root / "beir" / "toy", tmp_path / "toy"))).load("test")
    with pytest.raises(ValueError, match=r"the corpus holds 21 documents and index .*toy 20; 'extra' is not in"):
        search.search({**corpus, "extra": {"text": "x"}}, queries, 10)
    with pytest.raises(ValueError, match="score_function 'euclidean'"):
        search.search(corpus, queries, 10, "euclidean")
    with pytest.raises(NotImplementedError, match="call EvaluateRetrieval.retrieve"):
        EvaluateRetrieval(search).encode_and_retrieve(corpus, queries)
    with pytest.raises(ValueError, match="routing 'pilot' chooses a router of a router directory"):
        RoutedSearch(None, root / "idx" / "toy", routing="pilot", model=str(toy_model_dir))
    assert search.search(corpus, {}, 10) == {}


def facade_hits(lexical_world, toy_model_dir, query: str, k: int):
    root = lexical_world["root"]
    rr = RouterRetriever.load(root / "router", model=str(toy_model_dir))
    (result,) = rr.search([query], k=k, index=root / "idx" / "toy")
    return result


def corpus_texts(lexical_world) -> dict[str, tuple[str, str]]:
    return {doc.id: (doc.title, doc.text) for doc in lexical_world["datasets"]["toy"].corpus()}


def test_langchain_retriever_returns_documents(lexical_world, toy_model_dir):
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    root = lexical_world["root"]
    retriever = LangChainRetriever(router=root / "router", index=root / "idx" / "toy", model=str(toy_model_dir), k=4)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke(QUERY)
    expected = facade_hits(lexical_world, toy_model_dir, QUERY, 4)
    assert all(isinstance(doc, Document) for doc in docs)
    assert [(d.id, d.metadata["doc_id"], d.metadata["score"]) for d in docs] == [
        (doc_id, doc_id, pytest.approx(score)) for doc_id, score in expected.hits]
    assert {d.metadata["system"] for d in docs} == {expected.system}
    texts = corpus_texts(lexical_world)
    assert [(d.metadata["title"], d.page_content) for d in docs] == [texts[d.metadata["doc_id"]] for d in docs]
    assert set(docs[0].metadata) == {"doc_id", "score", "title", "system", "confidence", "unfamiliar", "metadata"}
    batched = retriever.batch([QUERY, "lava from a volcano"])
    assert [d.metadata["doc_id"] for d in batched[0]] == [d.metadata["doc_id"] for d in docs]
    assert batched[1][0].metadata["doc_id"].startswith("volcano")
    assert [d.metadata["doc_id"] for d in asyncio.run(retriever.ainvoke(QUERY))] == [d.id for d in docs]
    with pytest.raises(ValueError, match="k"):
        LangChainRetriever(router=root / "router", index=root / "idx" / "toy", model=str(toy_model_dir), k=0)


def test_llamaindex_retriever_returns_nodes_with_scores(lexical_world, toy_model_dir):
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import MetadataMode, NodeWithScore

    root = lexical_world["root"]
    retriever = LlamaIndexRetriever(root / "router", root / "idx" / "toy", model=str(toy_model_dir), k=4)
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve(QUERY)
    expected = facade_hits(lexical_world, toy_model_dir, QUERY, 4)
    assert all(isinstance(node, NodeWithScore) for node in nodes)
    assert [(n.node.node_id, n.node.metadata["doc_id"], n.score) for n in nodes] == [
        (doc_id, doc_id, pytest.approx(score)) for doc_id, score in expected.hits]
    assert {n.node.metadata["system"] for n in nodes} == {expected.system}
    texts = corpus_texts(lexical_world)
    assert [(n.node.metadata["title"], n.node.text) for n in nodes] == [texts[n.node.node_id] for n in nodes]
    for_llm = nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert for_llm.startswith(f"title: {nodes[0].node.metadata['title']}") and "system" not in for_llm
    assert [n.node.node_id for n in asyncio.run(retriever.aretrieve(QUERY))] == [n.node.node_id for n in nodes]
    with pytest.raises(ValueError, match="k must be a positive integer, got -1"):
        LlamaIndexRetriever(root / "router", root / "idx" / "toy", model=str(toy_model_dir), k=-1)


def test_adapters_over_a_milvus_collection_find_what_faiss_finds(lexical_world, toy_model_dir, tmp_path):
    pytest.importorskip("pymilvus")
    from retriever.index.lexical import LexicalConfig
    from retriever.index.milvus_build import build_milvus_index

    root, uri = lexical_world["root"], str(tmp_path / "milvus.db")
    build_milvus_index(lexical_world["datasets"]["toy"], lexical_world["encoder"].base, uri, "toy",
                       lexical=LexicalConfig())
    router, model = root / "router", str(toy_model_dir)
    faiss = LangChainRetriever(router=router, index=root / "idx" / "toy", model=model, k=5).invoke(QUERY)
    milvus = LangChainRetriever(router=router, index="toy", uri=uri, model=model, k=5).invoke(QUERY)
    assert [d.metadata["doc_id"] for d in milvus] == [d.metadata["doc_id"] for d in faiss]
    assert [d.page_content for d in milvus] == [d.page_content for d in faiss]
    nodes = LlamaIndexRetriever(router, "toy", uri=uri, model=model, k=5).retrieve(QUERY)
    assert [n.node.node_id for n in nodes] == [d.metadata["doc_id"] for d in faiss]
    corpus, queries, _ = GenericDataLoader(str(beir_folder(root / "beir" / "toy", tmp_path / "toy"))).load("test")
    by_faiss = RoutedSearch(router, root / "idx" / "toy", model=model).search(corpus, queries, 10)
    by_milvus = RoutedSearch(router, "toy", uri=uri, model=model).search(corpus, queries, 10)
    assert {q: list(hits) for q, hits in by_milvus.items()} == {q: list(hits) for q, hits in by_faiss.items()}


def test_an_index_without_document_text_is_refused(toy_encoder, tmp_path, toy_model_dir):
    """An index built before document stores has ids and vectors but no text to hand LangChain or LlamaIndex."""
    from conftest import write_toy_dataset

    from eval.data import open_dataset
    from retriever.index.faiss_index import build_index
    from retriever.storage.docstore import STORE_FILE

    write_toy_dataset(tmp_path / "beir")
    index = build_index(open_dataset(tmp_path / "beir", "toy"), toy_encoder, tmp_path / "idx")
    meta = json.loads((index.path / "index.json").read_text())
    del meta["files"][STORE_FILE]
    (index.path / "index.json").write_text(json.dumps(meta))
    (index.path / STORE_FILE).unlink()
    with pytest.raises(ValueError, match=r"index .*idx keeps no document text \(built before document stores\)"):
        LlamaIndexRetriever(None, index.path, model=str(toy_model_dir))
    with pytest.raises(ValueError, match="keeps no document text"):
        LangChainRetriever(index=index.path, model=str(toy_model_dir))
    assert RoutedSearch(None, index.path, model=str(toy_model_dir)).source.index is not None  # ids suffice


def test_readme_snippets_run(lexical_world, toy_model_dir, tmp_path, monkeypatch, capsys):
    """The README's adapter snippets, run as written on copies of the toy router and index named as there (the toy
    model stands in for the packaged default)."""
    import retriever.encoding.encoder as encoder_module

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### In BEIR, LangChain and LlamaIndex", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    snippets = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    assert len(snippets) == 3 and all(len(s.strip().splitlines()) <= 5 for s in snippets)
    root = lexical_world["root"]
    for source, name in ((root / "router", "my-router"), (root / "idx" / "toy", "my-index"),
                         (root / "idx" / "toy-bm25", "my-index-bm25")):
        shutil.copytree(source, tmp_path / name)
    load_encoder = encoder_module.load_encoder
    monkeypatch.setattr(encoder_module, "load_encoder", lambda model=None, **kwargs: load_encoder(
        model or toy_model_dir, **kwargs))
    monkeypatch.chdir(tmp_path)
    corpus, queries, qrels = GenericDataLoader(str(beir_folder(root / "beir" / "toy", tmp_path / "toy"))).load("test")
    scope = {"corpus": corpus, "queries": queries, "qrels": qrels}
    exec(compile(snippets[0], "README.md", "exec"), scope)
    expected = cli_ndcg(root / "idx" / "toy", root / "beir" / "toy", ["default"], "--router", str(root / "router"),
                        "--model", str(toy_model_dir))
    assert scope["ndcg"]["NDCG@10"] == pytest.approx(expected["default"], abs=1e-6)
    for snippet in snippets[1:]:
        exec(compile(snippet, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10 and lines[:5] == lines[5:]  # LangChain and LlamaIndex print the same hits
    systems = {"base", "bm25", "hybrid:base", "toy-expert", "other-expert", "hybrid:toy-expert",
               "hybrid:other-expert"}
    assert all(line.split()[0] in corpus and line.split()[1] in systems for line in lines)
