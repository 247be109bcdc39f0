"""Documents kept in a Milvus collection, and added or deleted with Milvus's own insert/delete
(``retriever.index.milvus_changes``, ``MilvusBackend.add``/``delete``), on a real Milvus Lite server started on a
temporary ``.db`` file: hits carry the stored text; after an add the rankings equal a fresh build's of the same
documents (dense and BM25, which is refitted); a deleted document never comes back from dense, BM25 or a hybrid;
refusals come before any encoding."""

import json

import pytest

from eval.data import open_dataset
from retriever.index.backends import MilvusBackend
from retriever.index.base import Document
from retriever.index.lexical import LexicalConfig
from retriever.index.milvus import MAX_VARCHAR, META, MilvusIndex, _client
from retriever.index.milvus_build import build_milvus_index
from retriever.ranking.systems import FUSION_DEPTH, FusionSettings, run_system
from retriever.ranking.topk import search, search_lexical

pytest.importorskip("pymilvus")

QUERIES = ["blue whale largest animal", "sourdough bread yeast", "memory safety ownership", "zzzz qqqq",
           "more about chess openings and coffee"]
IDS = [f"q{i}" for i in range(len(QUERIES))]


class Docs:
    """A plain collection of documents, as ``build_milvus_index`` takes a dataset."""

    def __init__(self, docs):
        self.docs = list(docs)

    def corpus(self):
        return iter(self.docs)


@pytest.fixture
def corpus(data_dir):
    """The toy corpus, with metadata on some documents and one text longer than Milvus's VARCHAR (in 3 chunks)."""
    docs = [Document(d.id, d.title, d.text, {"n": i, "topic": d.id.split("-")[0]} if i % 3 == 0 else {})
            for i, d in enumerate(open_dataset(data_dir, "toy").corpus())]
    return docs + [Document("long-1", "Long", "é" * MAX_VARCHAR + " whale " + "x" * 10, {"long": True})]


@pytest.fixture
def backend(tmp_path):
    return MilvusBackend(str(tmp_path / "milvus" / "m.db"))


def build(backend, docs, name, toy_encoder):
    return build_milvus_index(Docs(docs), toy_encoder, backend.uri, name, lexical=LexicalConfig())


def rankings(index, lexical, toy_encoder):
    vectors = toy_encoder.encode(QUERIES)
    return search(index, vectors, IDS, k=FUSION_DEPTH), search_lexical(lexical, QUERIES, IDS, k=FUSION_DEPTH)


def assert_same(got: dict, want: dict):
    """The same documents with the same scores, best first (k covers the corpus, so documents of equal score, which
    Milvus orders by where it stored them, may swap places)."""
    assert got.keys() == want.keys() and any(want.values())
    for q in want:
        assert set(got[q]) == set(want[q]) and got[q] == pytest.approx(want[q], abs=1e-5, rel=1e-5)
        assert list(got[q].values()) == sorted(got[q].values(), reverse=True)


def test_documents_are_stored_and_hits_carry_them(backend, corpus, toy_encoder, toy_model_dir):
    from retriever.router_retriever import RouterRetriever

    index = build(backend, corpus, "docs", toy_encoder)
    assert index.stored and index.meta["format_version"] == 2 and index.meta["next_row"] == len(corpus)
    found = index.documents(["whale-1", "solar-1", "long-1", "absent"])
    assert set(found) == {"whale-1", "solar-1", "long-1"}
    assert found["whale-1"] == {"id": "whale-1", "title": "Blue whales", "metadata": {},
                                "text": "The blue whale is the largest animal known to have ever existed."}
    assert found["solar-1"]["metadata"] == {"n": 0, "topic": "solar"}
    assert found["long-1"]["text"] == corpus[-1].text and found["long-1"]["metadata"] == {"long": True}
    chunks = _client(backend.uri).query("docs", filter="doc_id == 'long-1'", output_fields=["text"])[0]["text"]
    assert len(chunks) == 3 and all(len(c.encode()) <= MAX_VARCHAR for c in chunks)
    [result] = RouterRetriever.base_only(str(toy_model_dir)).search(["blue whale largest animal"], k=3, index=index)
    assert [d["id"] for d in result.documents] == [doc_id for doc_id, _ in result.hits]
    by_id = {d.id: d for d in corpus}
    assert all(d["text"] == by_id[d["id"]].text and d["title"] == by_id[d["id"]].title for d in result.documents)


def test_add_equals_a_fresh_build(backend, corpus, toy_encoder):
    first, second = corpus[:14], corpus[14:]
    build(backend, first, "grown", toy_encoder)
    index, lexical = backend.add("grown", second, toy_encoder)
    fresh = build(backend, corpus, "fresh", toy_encoder)
    assert sorted(index.doc_ids) == sorted(fresh.doc_ids) and len(lexical) == len(corpus)
    for got, want in zip(rankings(index, lexical, toy_encoder), rankings(fresh, fresh.lexical(), toy_encoder),
                         strict=True):
        assert_same(got, want)
    meta = index.meta
    assert (meta["count"], meta["next_row"], meta["version"]) == (len(corpus), len(corpus), 1)
    assert meta["source"]["changed"] is True and meta["source"]["corpus_sha256"] is None
    assert index.documents([corpus[-1].id])[corpus[-1].id]["text"] == corpus[-1].text
    reopened = backend.open("grown", toy_encoder.info)
    assert reopened.doc_ids == index.doc_ids and reopened.meta == meta
    # replacing a document: its new text is what is stored, searched and counted
    new = Document("whale-1", "Whales", "Humpback whales sing long songs.", {"v": 2})
    index, lexical = backend.add("grown", [new], toy_encoder, replace=True)
    assert len(index) == len(corpus) and index.documents(["whale-1"])["whale-1"]["metadata"] == {"v": 2}
    assert list(search_lexical(lexical, ["humpback songs"], ["q"], k=3)["q"]) == ["whale-1"]
    assert index.meta["version"] == 2 and index.rows.max() == len(corpus)  # a new row after the highest


def test_deleted_documents_never_come_back(backend, corpus, toy_encoder):
    build(backend, corpus, "shrunk", toy_encoder)
    stale = backend.open("shrunk")  # opened before the delete
    dense, bm25 = rankings(stale, stale.lexical(), toy_encoder)
    doomed = {next(iter(dense[q])) for q in IDS if dense[q]} | {next(iter(bm25[q])) for q in IDS if bm25[q]}
    doomed |= {"solar-2", "long-1"}
    index, lexical = backend.delete("shrunk", sorted(doomed))
    kept = [d for d in corpus if d.id not in doomed]
    assert index.doc_ids == [d.id for d in kept] and index.documents(sorted(doomed)) == {}
    fresh = build(backend, kept, "fresh", toy_encoder)
    fusion = FusionSettings()
    for searched in (index, stale):
        dense, bm25 = rankings(searched, lexical, toy_encoder)
        hybrid = run_system("hybrid:base", IDS, dense, bm25, fusion, k=FUSION_DEPTH)
        for results in (dense, bm25, hybrid):
            assert not doomed & {d for hits in results.values() for d in hits}
    for got, want in zip(rankings(index, lexical, toy_encoder), rankings(fresh, fresh.lexical(), toy_encoder),
                         strict=True):
        assert_same(got, want)
    # rows keep their gaps; added documents continue after the highest row ever written
    index, _ = backend.add("shrunk", [Document("new-1", "Tea", "Green tea leaves are steamed.")], toy_encoder)
    assert index.rows[-1] == len(corpus) and index.meta["next_row"] == len(corpus) + 1
    assert index.meta["count"] == len(kept) + 1 and index.meta["version"] == 2
    assert list(search_lexical(index.lexical(), ["green tea"], ["q"], k=3)["q"]) == ["new-1"]


class Refusing:
    """An encoder that must not be reached: every refusal comes before encoding."""

    def __init__(self, encoder):
        self.info, self.dim, self.precision = encoder.info, encoder.dim, encoder.precision

    def encode(self, texts, progress=None):
        raise AssertionError("encoded before refusing")


def test_refusals_name_the_document_before_encoding(backend, corpus, toy_encoder):
    build(backend, corpus[:5], "small", toy_encoder)
    refusing = Refusing(toy_encoder)
    with pytest.raises(ValueError, match="document 'solar-1' is already in .*#small .*pass replace=True"):
        backend.add("small", [corpus[0]], refusing)
    with pytest.raises(ValueError, match="document 'x' is given twice"):
        backend.add("small", [Document("x", "", "a"), Document("x", "", "b")], refusing)
    with pytest.raises(ValueError, match="document 't': its title is longer than Milvus's 65535 bytes"):
        backend.add("small", [Document("t", "t" * (MAX_VARCHAR + 1), "a")], refusing)
    with pytest.raises(ValueError, match="document 'm': its metadata is longer than 65535 bytes"):
        backend.add("small", [Document("m", "", "a", {"k": "v" * MAX_VARCHAR})], refusing)
    with pytest.raises(ValueError, match="no documents to add"):
        backend.add("small", [], refusing)
    with pytest.raises(ValueError, match="document 'absent' is not in .*#small"):
        backend.delete("small", ["solar-1", "absent"])
    with pytest.raises(ValueError, match="deleting all 5 documents would leave .*#small empty"):
        backend.delete("small", [d.id for d in corpus[:5]])
    assert backend.open("small").meta["version"] == 0 and len(backend.open("small")) == 5  # nothing changed


def test_collections_before_stored_documents_load_search_and_refuse_changes(backend, corpus, toy_encoder,
                                                                            monkeypatch):
    from pymilvus import DataType

    from retriever.index import milvus_build

    def old_create(client, name, dim, lexical):  # the format 1 schema: no title, text or metadata
        schema = client.create_schema(auto_id=False)
        schema.add_field("row", DataType.INT64, is_primary=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
        client.create_collection(name, schema=schema)

    monkeypatch.setattr(milvus_build, "_create", old_create)
    monkeypatch.setattr(milvus_build, "document_fields", lambda doc: {})
    built = build(backend, corpus[:20], "old", toy_encoder)
    meta = {k: v for k, v in built.meta.items() if k not in ("next_row", "version")}
    _client(backend.uri).alter_collection_properties("old", properties={META: json.dumps({**meta,
                                                                                          "format_version": 1})})
    old = MilvusIndex.load(backend.uri, "old", toy_encoder.info)
    assert not old.stored and old.documents(["whale-1"]) == {}
    dense, bm25 = rankings(old, old.lexical(), toy_encoder)
    assert next(iter(dense["q0"])).startswith("whale") and next(iter(bm25["q0"])).startswith("whale")
    for change in (lambda: backend.add("old", [Document("n", "", "a")], Refusing(toy_encoder)),
                   lambda: backend.delete("old", ["whale-1"])):
        with pytest.raises(ValueError, match="built before collections stored .*rebuild it"):
            change()


def test_a_second_writer_of_a_milvus_lite_collection_is_refused(backend, corpus, toy_encoder):
    import subprocess
    import sys
    from pathlib import Path

    from retriever.index.changes import IndexBusyError

    build(backend, corpus[:4], "held", toy_encoder)
    lock_target = str(Path(backend.uri).with_name(f"{Path(backend.uri).name}-held"))
    script = ("import sys, time\nfrom retriever.index.changes import index_lock\nwith index_lock(sys.argv[1]):\n"
              "    print('locked', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, lock_target], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(IndexBusyError, match=rf"being changed by another process \(pid {holder.pid}\)"):
            backend.delete("held", [corpus[0].id])
    finally:
        holder.kill()
        holder.wait()
    assert len(backend.delete("held", [corpus[0].id])[0]) == 3  # the lock died with its process


def test_cli_add_and_delete_change_a_milvus_collection(backend, corpus, toy_encoder, toy_model_dir, tmp_path):
    from click.testing import CliRunner

    import cli

    build(backend, corpus[:4], "mine", toy_encoder)
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n" for d in corpus[4:6]),
                   encoding="utf-8")
    milvus = ["--index", "mine", "--backend", "milvus", "--uri", backend.uri]
    added = CliRunner().invoke(cli.main, ["-q", "add", *milvus, "--corpus", str(new), "--model", str(toy_model_dir)])
    assert added.exit_code == 0, added.output
    assert MilvusIndex.load(backend.uri, "mine").doc_ids == [d.id for d in corpus[:6]]
    deleted = CliRunner().invoke(cli.main, ["-q", "delete", *milvus, "--id", corpus[4].id])
    assert deleted.exit_code == 0, deleted.output
    assert corpus[4].id not in MilvusIndex.load(backend.uri, "mine").doc_ids


def writer_markers(uri: str, name: str) -> list[str]:
    """What a writer lock leaves: marker collections and the aliases naming them."""
    client = _client(uri)
    markers = [c for c in client.list_collections() if c.startswith(name + "__writer")]
    return markers + [a for m in markers for a in client.list_aliases(collection_name=m)["aliases"]]


def test_the_writer_lock_kept_on_milvus_refuses_a_second_writer_and_names_it(backend, corpus, toy_encoder):
    """The lock a server's collections get (``retriever.index.milvus_lock``: an alias only one writer's marker
    collection can hold), on a real Milvus Lite: a second writer is refused naming the first; leaving releases it."""
    import os
    import socket

    from retriever.index.changes import IndexBusyError
    from retriever.index.milvus_lock import writer_lock

    build(backend, corpus[:4], "held", toy_encoder)
    client = _client(backend.uri)
    with writer_lock(client, backend.uri, "held"):
        with pytest.raises(IndexBusyError, match=rf"another writer \(pid {os.getpid()} on {socket.gethostname()} "
                                                 r"since .*\).*drop_alias\('held__writer'\)"):
            backend.delete("held", [corpus[0].id])
        with pytest.raises(IndexBusyError, match="another writer"):
            with writer_lock(client, backend.uri, "held"):
                pass
        assert len(writer_markers(backend.uri, "held")) == 2  # the holder's marker and the alias naming it
    assert len(MilvusIndex.load(backend.uri, "held")) == 4  # the refused delete changed nothing
    assert len(backend.delete("held", [corpus[0].id])[0]) == 3
    assert writer_markers(backend.uri, "held") == []  # a change leaves no lock behind


@pytest.mark.parametrize("host", ["here", "elsewhere"])
def test_a_dead_writers_milvus_lock_is_taken_over_on_its_host_and_reported_from_another(backend, corpus,
                                                                                        toy_encoder, host):
    """A writer killed mid-change leaves its alias and marker: on the same host its pid is gone, so the next writer
    takes over; a writer recorded on another host cannot be checked, so the lock is reported with its release."""
    import socket
    import subprocess
    import sys

    from retriever.index.changes import IndexBusyError
    from retriever.index.milvus_lock import HOLDER, _marker

    build(backend, corpus[:4], "held", toy_encoder)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client = _client(backend.uri)
    marker = _marker(client, "held")
    holder = {"host": socket.gethostname() if host == "here" else "elsewhere", "pid": int(gone.stdout), "since": "t"}
    client.alter_collection_properties(marker, properties={HOLDER: json.dumps(holder)})
    client.create_alias(collection_name=marker, alias="held__writer")
    if host == "elsewhere":
        with pytest.raises(IndexBusyError, match=rf"pid {gone.stdout.strip()} on elsewhere since t"):
            backend.delete("held", [corpus[0].id])
        client.drop_alias(alias="held__writer")  # what the message says to do
        client.drop_collection(marker)
    assert len(backend.delete("held", [corpus[0].id])[0]) == 3
    assert writer_markers(backend.uri, "held") == []


def test_a_lock_taken_over_is_not_released_by_the_writer_it_was_taken_from(backend, corpus, toy_encoder):
    """A writer whose lock another took over (its pid looked dead) leaves the alias to the new holder, and an alias
    refused for a reason other than a holder is that error, not a retry without end."""
    from pymilvus.exceptions import MilvusException

    from retriever.index.milvus_lock import _acquire, _marker, _release

    build(backend, corpus[:4], "held", toy_encoder)
    client = _client(backend.uri)
    first, second = _marker(client, "held"), _marker(client, "held")
    client.create_alias(collection_name=first, alias="held__writer")
    client.alter_alias(collection_name=second, alias="held__writer")  # taken over
    _release(client, "held", first)
    assert client.describe_alias(alias="held__writer")["collection_name"] == second
    _release(client, "held", second)
    assert writer_markers(backend.uri, "held") == []
    with pytest.raises(MilvusException, match="'no_such_marker' does not exist"):
        _acquire(client, backend.uri, "held", "no_such_marker")  # no holder to blame: the server's own error


def test_collection_names_the_library_uses_are_refused():
    from retriever.index.milvus import check_collection_name

    for name in ("a__vocab", "a__incomplete_1", "a__writer", "a__writer_0f"):
        with pytest.raises(ValueError, match="which the library uses"):
            check_collection_name(name)
