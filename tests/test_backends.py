"""The contract every index backend (``retriever.index.backends.IndexBackend``) passes, as every router passes
``tests/test_routers.py``'s: FAISS index directories, and Milvus collections on a real Milvus Lite server started on
a temporary ``.db`` file. Both on the toy encoder and the 20-document toy corpus of ``conftest``."""

import re
from pathlib import Path

import pytest

from eval.data import open_dataset
from retriever.index.backends import FaissBackend, MilvusBackend, backend_for
from retriever.ranking.topk import search, search_lexical
from retriever.storage.files import ArtifactError

QUERIES = ["blue whale largest animal", "how does sourdough bread rise", "zzzz qqqq"]
IDS = [f"q{i}" for i in range(len(QUERIES))]


@pytest.fixture
def toy(data_dir):
    return open_dataset(data_dir, "toy")


def backend_and_targets(name: str, tmp_path: Path):
    """The backend, and three targets it may write: the index, one built without BM25, one the user owns."""
    if name == "faiss":
        out = tmp_path / "out"
        return FaissBackend(tmp_path / "cache"), *(str(out / t) for t in ("idx", "bare", "users"))
    pytest.importorskip("pymilvus")
    return MilvusBackend(str(tmp_path / "milvus" / "m.db")), "idx", "bare", "users"


def make_users_own(backend, target: str) -> None:
    """Something at ``target`` that is not an index of the library's."""
    if isinstance(backend, FaissBackend):
        Path(target).mkdir(parents=True)
        (Path(target) / "notes.txt").write_text("mine", encoding="utf-8")
    else:
        from retriever.index.milvus import _client

        _client(backend.uri).create_collection(target, dimension=2)


def ranked(results):
    return {q: list(hits) for q, hits in results.items()}


@pytest.mark.parametrize("name", ["faiss", "milvus"])
def test_backend_contract(name, toy, toy_encoder, other_model_dir, tmp_path, caplog):
    from retriever.encoding.encoder import load_encoder

    backend, target, bare_target, users = backend_and_targets(name, tmp_path)
    backend.check_target(target, overwrite=False)  # nothing there yet
    make_users_own(backend, users)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="already exists|refusing to replace it"):
            backend.check_target(users, overwrite=overwrite)

    dense, lexical = backend.build(toy, toy_encoder, target, lexical=True)
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        backend.check_target(target, overwrite=False)
    backend.check_target(target, overwrite=True)  # its own index may be replaced
    opened = backend.open(target, toy_encoder.info)
    ensured, ensured_lexical = backend.ensure(toy, toy_encoder, lexical=True)
    caplog.set_level("INFO")
    again, _ = backend.ensure(toy, toy_encoder, lexical=True)
    assert "reusing" in caplog.text and again.meta["files"] == ensured.meta["files"]  # a current entry is kept
    assert type(backend_for(opened)) is type(backend) is type(backend_for(ensured))

    vectors = toy_encoder.encode(QUERIES)
    want = search(dense, vectors, IDS, k=5)
    assert list(want["q0"])[0].startswith("whale")
    for index in (opened, ensured):
        assert index.doc_ids == dense.doc_ids == [doc.id for doc in toy.corpus()]
        got = search(index, vectors, IDS, k=5)
        assert ranked(got) == ranked(want)
        for q in IDS:
            assert got[q] == pytest.approx(want[q], abs=1e-5)

    want = search_lexical(lexical, QUERIES, IDS, k=5)
    assert list(want["q0"])[0].startswith("whale") and want["q2"] == {}  # no shared term: nothing
    for found in (ensured_lexical, backend.lexical_of(opened), backend.lexical_of(ensured)):
        assert found.doc_ids == dense.doc_ids and len(found) == len(dense)
        found.check_corpus(opened)
        assert ranked(search_lexical(found, QUERIES, IDS, k=5)) == ranked(want)

    with pytest.raises(ArtifactError, match="built with model"):
        backend.open(target, load_encoder(other_model_dir, device="cpu").info)
    bare, none = backend.build(toy, toy_encoder, bare_target, lexical=False)
    assert none is None
    with pytest.raises(ValueError, match=re.escape(str(bare.path)) + ".*build it with `routerretriever index`"):
        backend.lexical_of(bare)
