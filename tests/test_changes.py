"""Adding to and deleting from a named FAISS index (``retriever.index.changes``, ``FaissBackend.add/delete``,
``routerretriever add/delete``): the result searches like a fresh build, deleted documents never come back, every
refusal is one line, and a writer killed at any point leaves a loadable, unchanged index."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, write_toy_dataset

from eval.data import open_dataset
from retriever.index.backends import FaissBackend
from retriever.index.base import Document, IndexConfig
from retriever.index.changes import (
    IndexBusyError,
    encode_documents,
    lock_path,
    plan_change,
    write_dense_change,
)
from retriever.index.faiss_index import CorpusIndex, build_index
from retriever.index.lexical import LexicalIndex, build_lexical_index, lexical_path_for
from retriever.ranking.systems import FusionSettings, run_system
from retriever.ranking.topk import search, search_lexical
from retriever.storage.files import sha256_file

NEW = [
    Document("new-glacier", "Glaciers", "Glaciers are slow rivers of ice that carve valleys.", {"source": "test"}),
    Document("new-violin", "Violins", "A violin has four strings tuned in perfect fifths."),
    Document("new-comet", "Comets", "A comet's tail of gas and dust points away from the sun."),
    Document("new-bees", "Honey bees", "Honey bees dance to tell the hive where flowers are."),
    Document("new-solar", "", "Solar farms feed photovoltaic electricity into the grid."),
]
QUERIES = {"q1": "solar panels and photovoltaic electricity", "q2": "ice glaciers carving valleys",
           "q3": "blue whale largest animal", "q4": "violin strings", "q5": "jazz music from New Orleans"}


class Docs:
    """A corpus of ``Document``s (what ``build_lexical_index`` reads)."""

    def __init__(self, docs):
        self.docs = list(docs)

    def corpus(self):
        return iter(self.docs)


def build_named(docs, encoder, path: Path, config: IndexConfig | None = None):
    """A named index of ``docs`` with its BM25 index beside it, as ``index --output`` writes them."""
    dense = build_index(list(docs), encoder, path, config)
    return dense, build_lexical_index(Docs(docs), lexical_path_for(path))


def results(dense, bm25, encoder, k: int = 10):
    ids, texts = list(QUERIES), list(QUERIES.values())
    return search(dense, encoder.encode(texts), ids, k), search_lexical(bm25, texts, ids, k)


def assert_same_results(got, expected):
    assert got.keys() == expected.keys()
    for query_id in expected:
        assert list(got[query_id]) == list(expected[query_id]), query_id
        np.testing.assert_allclose(list(got[query_id].values()), list(expected[query_id].values()), atol=1e-5)


def snapshot(path: Path) -> dict[str, str]:
    """Every file of an index directory and the BM25 one beside it, with its sha256."""
    return {str(p.relative_to(path.parent)): sha256_file(p)
            for root in (path, lexical_path_for(path)) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def corpus(tmp_path) -> list[Document]:
    return list(open_dataset(write_toy_dataset(tmp_path / "beir").parent, "toy").corpus())


@pytest.fixture
def backend(tmp_path) -> FaissBackend:
    return FaissBackend(tmp_path / "cache")


@pytest.mark.parametrize("config", [IndexConfig(), IndexConfig(index_type="hnsw"),
                                    IndexConfig(index_type="ivf", ivf_nlist=2)], ids=["flat", "hnsw", "ivf"])
def test_add_searches_like_a_fresh_build(toy_encoder, corpus, backend, tmp_path, config):
    build_named(corpus, toy_encoder, tmp_path / "named", config)
    dense, bm25 = backend.add(tmp_path / "named", NEW, toy_encoder)
    fresh = build_named(corpus + NEW, toy_encoder, tmp_path / "fresh", config)
    assert dense.doc_ids == fresh[0].doc_ids and bm25.doc_ids == dense.doc_ids
    for got, expected in zip(results(dense, bm25, toy_encoder), results(*fresh, toy_encoder), strict=True):
        assert_same_results(got, expected)
    np.testing.assert_allclose(dense.embeddings, fresh[0].embeddings, atol=1e-6)
    assert dense.index.ntotal == len(corpus) + len(NEW)
    assert dense.meta["version"] == 2 and dense.meta["source"]["changes"] == 1
    assert "corpus_sha256" not in dense.meta["source"]  # never taken for the cache entry of its corpus file
    assert bm25.meta["source"]["index_version"] == 2
    assert dense.store.get(["new-glacier"])["new-glacier"]["metadata"] == {"source": "test"}
    assert len(dense.store) == len(dense)
    reopened = backend.open(tmp_path / "named", toy_encoder.info)
    assert backend.lexical_of(reopened).doc_ids == reopened.doc_ids


def test_delete_removes_documents_everywhere(toy_encoder, corpus, backend, tmp_path):
    build_named(corpus, toy_encoder, tmp_path / "named")
    gone = ["solar-1", "solar-2", "jazz-1"]
    dense, bm25 = backend.delete(tmp_path / "named", gone)
    assert len(dense) == len(corpus) - 3 and not set(gone) & set(dense.doc_ids) and bm25.doc_ids == dense.doc_ids
    ids, texts = list(QUERIES), list(QUERIES.values())
    dense_hits = search(dense, toy_encoder.encode(texts), ids, len(dense))
    lexical_hits = search_lexical(bm25, texts, ids, len(dense))
    hybrid = run_system("hybrid:base", ids, dense_hits, lexical_hits, FusionSettings(), len(dense))
    for hits in (dense_hits, lexical_hits, hybrid):
        assert all(not set(gone) & set(hits[q]) for q in ids)
    assert list(lexical_hits["q5"])[0] == "jazz-2" and lexical_hits["q1"] == {}  # the solar documents are gone
    assert dense.store.get(gone) == {} and len(dense.store) == len(dense)
    fresh = build_named([d for d in corpus if d.id not in gone], toy_encoder, tmp_path / "fresh")
    for got, expected in zip(results(dense, bm25, toy_encoder), results(*fresh, toy_encoder), strict=True):
        assert_same_results(got, expected)
    assert dense.meta["version"] == 2


def test_routed_hybrid_search_follows_a_deletion(toy_encoder, corpus, backend, tmp_path):
    from retriever.encoding.expert_encoder import MultiExpertEncoder
    from retriever.router_retriever import RouterRetriever
    from retriever.routers import FixedRouter

    before, _ = build_named(corpus, toy_encoder, tmp_path / "named")
    encoder = MultiExpertEncoder(toy_encoder)
    hybrid = RouterRetriever(encoder, FixedRouter(["base", "bm25", "hybrid:base"], {"expert": "hybrid:base"}))
    assert "solar-1" in {doc_id for doc_id, _ in hybrid.search([QUERIES["q1"]], k=20, index=before)[0].hits}
    after, _ = backend.delete(tmp_path / "named", ["solar-1", "solar-2"])
    result = hybrid.search([QUERIES["q1"]], k=20, index=after)[0]  # the same retriever: its BM25 is reopened
    assert result.system == "hybrid:base" and len(result.hits) == 18
    assert not {"solar-1", "solar-2"} & {doc_id for doc_id, _ in result.hits}
    assert all(doc["id"] == doc_id for (doc_id, _), doc in zip(result.hits, result.documents, strict=True))


def test_replace_swaps_the_document(toy_encoder, corpus, backend, tmp_path):
    build_named(corpus, toy_encoder, tmp_path / "named")
    changed = Document("solar-1", "Solar", "Glaciers are slow rivers of ice.")
    dense, bm25 = backend.add(tmp_path / "named", [changed], toy_encoder, replace=True)
    assert len(dense) == len(corpus) and dense.doc_ids[-1] == "solar-1"
    assert dense.store.get(["solar-1"])["solar-1"]["text"] == changed.text
    np.testing.assert_allclose(dense.embeddings[-1], toy_encoder.encode([changed.content()])[0], atol=1e-6)
    assert next(iter(search_lexical(bm25, ["glaciers ice"], ["q"], 1)["q"])) == "solar-1"


def test_refusals_are_one_line_and_change_nothing(toy_encoder, corpus, backend, tmp_path):
    named = tmp_path / "named"
    build_named(corpus, toy_encoder, named)
    before = snapshot(named)
    with pytest.raises(ValueError, match=r"already holds the documents 'solar-1'; pass --replace"):
        backend.add(named, [Document("solar-1", "", "again"), *NEW], toy_encoder)
    with pytest.raises(ValueError, match=r"repeat the ids 'new-x'"):
        backend.add(named, [Document("new-x", "", "a"), Document("new-x", "", "b")], toy_encoder)
    with pytest.raises(ValueError, match=r"holds no documents 'nope', 'nada'; nothing was deleted"):
        backend.delete(named, ["solar-1", "nope", "nada"])
    with pytest.raises(ValueError, match=r"would leave .* empty"):
        backend.delete(named, [doc.id for doc in corpus])
    with pytest.raises(FileNotFoundError, match=r"no index at .*missing"):
        backend.delete(tmp_path / "missing", ["solar-1"])
    assert snapshot(named) == before
    cached, _ = backend.ensure(open_dataset(tmp_path / "beir", "toy"), toy_encoder)
    with pytest.raises(ValueError, match=r"is a cache entry, .* --output DIR"):
        backend.add(cached.path, NEW, toy_encoder)
    with pytest.raises(ValueError, match=r"is a cache entry"):  # that of another cache directory, too
        FaissBackend(tmp_path / "other-cache").delete(cached.path, ["solar-1"])
    assert len(CorpusIndex.load(cached.path)) == len(corpus)


def _python(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(toy_encoder, corpus, backend, tmp_path):
    named = tmp_path / "named"
    build_named(corpus, toy_encoder, named)
    holder = _python("import sys, time\nfrom retriever.index.changes import index_lock\nwith index_lock(sys.argv[1]):\n"
                     "    print('locked', flush=True)\n    time.sleep(120)\n", named)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(IndexBusyError, match=rf"being changed by another process \(pid {holder.pid}\)"):
            backend.delete(named, ["solar-1"])
    finally:
        holder.kill()
        holder.wait()
    assert len(backend.delete(named, ["solar-1"])[0]) == len(corpus) - 1  # the lock died with its process
    assert lock_path(named).is_file()


SLOW_ADD = """
import sys, time
from retriever.encoding.encoder import load_encoder
from retriever.index.backends import FaissBackend
from retriever.index.base import Document
from retriever.storage import docstore

encoder = load_encoder(sys.argv[2], device="cpu")
if sys.argv[3] == "in-write":  # a slow disk: the new version is written, not yet swapped into place
    changed = docstore.DocStore.changed
    def slow(*args, **kwargs):
        count = changed(*args, **kwargs)
        print("writing", flush=True)
        time.sleep(120)
        return count
    docstore.DocStore.changed = staticmethod(slow)

def documents():
    for i in range(40):
        if i == 5 and sys.argv[3] == "in-read":
            print("reading", flush=True)
            time.sleep(120)
        yield Document(f"slow-{i}", "Slow", f"slow document number {i}")

FaissBackend(sys.argv[4]).add(sys.argv[1], documents(), encoder)
print("done", flush=True)
"""


@pytest.mark.parametrize(("moment", "signal_line"), [("in-read", b"reading"), ("in-write", b"writing")])
def test_a_sigkilled_add_leaves_the_index_loadable_and_unchanged(toy_encoder, toy_model_dir, corpus, backend,
                                                                 tmp_path, moment, signal_line):
    named = tmp_path / "named"
    build_named(corpus, toy_encoder, named)
    before, searched = snapshot(named), results(*build_named(corpus, toy_encoder, tmp_path / "same"), toy_encoder)
    writer = _python(SLOW_ADD, named, toy_model_dir, moment, tmp_path / "cache")
    try:
        assert writer.stdout.readline().strip() == signal_line
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".named.tmp-")]
    assert len(leftovers) == (moment == "in-write")  # killed inside the write: its new version, never swapped in
    assert snapshot(named) == before
    dense = CorpusIndex.load(named, toy_encoder.info)  # checksums verified
    bm25 = backend.lexical_of(dense)
    assert len(dense.store) == len(corpus)
    for got, expected in zip(results(dense, bm25, toy_encoder), searched, strict=True):
        assert_same_results(got, expected)
    dense, bm25 = backend.add(named, NEW, toy_encoder)  # the lock died with the writer; its leftovers go
    assert len(dense) == len(bm25) == len(corpus) + len(NEW)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".named.") and p.name != ".named.lock"]


def test_a_change_killed_between_the_dense_and_bm25_swaps_is_repaired(toy_encoder, corpus, backend, tmp_path, caplog):
    named = tmp_path / "named"
    build_named(corpus, toy_encoder, named)
    index = CorpusIndex.load(named)
    write_dense_change(index, plan_change(index, NEW), encode_documents(NEW, toy_encoder))  # killed here
    dense = backend.open(named, toy_encoder.info)
    assert LexicalIndex.load(lexical_path_for(named)).doc_ids != dense.doc_ids  # BM25 one version behind
    with caplog.at_level(logging.WARNING, logger="retriever.index.changes"):
        bm25 = backend.lexical_of(dense)
    assert "rebuilding it from the document store" in caplog.text
    assert bm25.doc_ids == dense.doc_ids and bm25.meta["source"]["index_version"] == 2
    assert next(iter(search_lexical(bm25, ["glaciers carve valleys"], ["q"], 1)["q"])) == "new-glacier"
    caplog.clear()
    backend.lexical_of(dense)
    assert not caplog.text  # repaired once
    write_dense_change(dense, plan_change(dense, delete=["new-glacier"]), np.zeros((0, dense.dim), np.float32))
    dense, bm25 = backend.delete(named, ["new-violin"])  # the next change repairs it too
    assert bm25.doc_ids == dense.doc_ids and not {"new-glacier", "new-violin"} & set(bm25.doc_ids)
    assert dense.meta["version"] == 4 and dense.meta["source"]["changes"] == 3


def _cli(*args):
    import cli

    return CliRunner().invoke(cli.main, ["-q", *map(str, args)])


def test_cli_delete(toy_encoder, corpus, tmp_path):
    build_named(corpus, toy_encoder, tmp_path / "named")
    (tmp_path / "ids.txt").write_text("solar-1\n\nwhale-1\n", encoding="utf-8")
    result = _cli("delete", "--index", tmp_path / "named", "--id", "jazz-1", "--ids-file", tmp_path / "ids.txt")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("deleted 3\t") and "version 2" in result.output
    assert len(CorpusIndex.load(tmp_path / "named")) == len(corpus) - 3
    result = _cli("delete", "--index", tmp_path / "named", "--id", "jazz-1")
    assert result.exit_code == 1 and "holds no documents 'jazz-1'" in result.output
    result = _cli("delete", "--index", tmp_path / "named")
    assert result.exit_code == 1 and "no document ids to delete" in result.output


def test_cli_add(toy_encoder, toy_model_dir, corpus, tmp_path):
    pytest.importorskip("retriever.index.collection")
    build_named(corpus, toy_encoder, tmp_path / "named")
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps({"doc": d.id, "title": d.title, "body": d.text}) + "\n" for d in NEW),
                   encoding="utf-8")
    args = ("add", "--index", tmp_path / "named", "--corpus", new, "--id-field", "doc", "--text-field", "body")
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"added {len(NEW)}\t") and "bm25" in result.output
    index = CorpusIndex.load(tmp_path / "named")
    assert index.doc_ids[-len(NEW):] == [d.id for d in NEW] and index.meta["model"]["id"] == toy_encoder.info.id
    result = _cli(*args)
    assert result.exit_code == 1 and "already holds the documents 'new-glacier'" in result.output
    assert _cli(*args, "--replace").exit_code == 0
