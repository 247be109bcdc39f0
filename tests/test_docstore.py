"""The document store beside an index (``retriever.storage.docstore``): written with the index, checked on load,
and what search hits carry back (facade and CLI)."""

import json
import sqlite3

import pytest
from click.testing import CliRunner

import cli
from eval.data import open_dataset
from retriever.index.faiss_index import CorpusIndex, build_index
from retriever.router_retriever import RouterRetriever
from retriever.storage.docstore import STORE_FILE, DocStore
from retriever.storage.files import ArtifactError


@pytest.fixture
def toy_index(data_dir, toy_encoder, tmp_path):
    dataset = open_dataset(data_dir, "toy")
    return dataset, build_index(dataset, toy_encoder, tmp_path / "idx")


def test_store_holds_every_document_of_the_index(toy_index):
    dataset, index = toy_index
    corpus = {doc.id: doc for doc in dataset.corpus()}
    assert index.store is not None and len(index.store) == len(index) == len(corpus)
    assert index.store.ids() == index.doc_ids
    first, third = index.doc_ids[0], index.doc_ids[2]
    stored = index.documents([third, "absent", first])
    assert set(stored) == {first, third}
    assert stored[third] == {"id": third, "title": corpus[third].title, "text": corpus[third].text, "metadata": {}}


def test_store_is_checked_like_every_data_file(toy_index):
    _, index = toy_index
    with sqlite3.connect(index.path / STORE_FILE) as connection:
        assert connection.execute("UPDATE docs SET text = 'tampered' WHERE row = 1").rowcount == 1
    connection.close()
    with pytest.raises(ArtifactError, match="docs.sqlite"):
        CorpusIndex.load(index.path)


def test_a_foreign_file_is_not_a_store(tmp_path):
    (tmp_path / "x.sqlite").write_bytes(b"not a database at all, just bytes" * 10)
    with pytest.raises(ArtifactError, match="not a readable document store"):
        DocStore.open(tmp_path / "x.sqlite")
    with pytest.raises(ArtifactError, match="no document store"):
        DocStore.open(tmp_path / "absent.sqlite")


def test_metadata_and_order_survive_a_change(tmp_path):
    from retriever.index.base import Document

    docs = [Document("a", "A", "alpha", {"lang": "en", "n": 1}), Document("b", "", "beta")]
    assert DocStore.write(tmp_path / "one.sqlite", docs) == 2
    with pytest.raises(FileExistsError):
        DocStore.write(tmp_path / "one.sqlite", docs)
    count = DocStore.changed(tmp_path / "one.sqlite", tmp_path / "two.sqlite", add=[Document("c", "C", "gamma")],
                             delete=["a"])
    old, new = DocStore.open(tmp_path / "one.sqlite"), DocStore.open(tmp_path / "two.sqlite")
    assert (count, new.ids(), old.ids()) == (2, ["b", "c"], ["a", "b"])  # the source is never written
    assert old.get(["a"])["a"]["metadata"] == {"lang": "en", "n": 1}
    assert [doc["id"] for doc in new.documents()] == ["b", "c"]


def test_search_hits_carry_the_text(toy_index, toy_model_dir):
    dataset, index = toy_index
    corpus = {doc.id: doc for doc in dataset.corpus()}
    retriever = RouterRetriever.base_only(str(toy_model_dir))
    [result] = retriever.search(["alpha particles"], k=3, index=index)
    assert len(result.documents) == len(result.hits) == 3
    for (doc_id, _), doc in zip(result.hits, result.documents, strict=True):
        assert (doc["id"], doc["text"]) == (doc_id, corpus[doc_id].text)
    [bare] = retriever.search(["alpha particles"], k=3, index=index, fields=False)
    assert bare.documents == () and bare.hits == result.hits


def test_routed_search_hits_carry_the_text(world, toy_model_dir):
    retriever = RouterRetriever.load(world["store"].root, "pilot", model=str(toy_model_dir))
    index = world["indexes"]["toy"]
    results = retriever.search(["alpha", "omega"], k=2, index=index)
    assert all(doc is not None and doc["id"] == doc_id for r in results
               for (doc_id, _), doc in zip(r.hits, r.documents, strict=True))


def test_search_json_carries_the_text_and_no_fields_drops_it(toy_index, toy_model_dir):
    dataset, index = toy_index
    corpus = {doc.id: doc for doc in dataset.corpus()}
    base = ["-q", "search", "--index", str(index.path), "--model", str(toy_model_dir), "--query", "alpha", "--json",
            "--top-k", "2"]
    full = CliRunner().invoke(cli.main, base, catch_exceptions=False)
    assert full.exit_code == 0, full.output
    hits = json.loads(full.output)["hits"]
    assert [h["text"] for h in hits] == [corpus[h["doc_id"]].text for h in hits] and "metadata" in hits[0]
    bare = CliRunner().invoke(cli.main, [*base, "--no-fields"], catch_exceptions=False)
    assert bare.exit_code == 0, bare.output
    assert [set(h) for h in json.loads(bare.output)["hits"]] == [{"doc_id", "score"}] * 2


def test_an_index_built_before_stores_searches_without_text(toy_index, toy_model_dir):
    _, index = toy_index
    meta = json.loads((index.path / "index.json").read_text())
    del meta["files"][STORE_FILE]
    (index.path / "index.json").write_text(json.dumps(meta))
    (index.path / STORE_FILE).unlink()
    old = CorpusIndex.load(index.path)
    assert old.store is None and old.documents(["d1"]) == {}
    [result] = RouterRetriever.base_only(str(toy_model_dir)).search(["alpha"], k=2, index=old)
    assert result.documents == () and len(result.hits) == 2
