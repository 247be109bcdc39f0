"""Where corpus indexes live: the one interface every command and workflow opens indexes through.

- ``FaissBackend`` (the default): index directories, cached under ``<cache>/indexes`` (dense FAISS index and the
  bm25s BM25 index beside it), or written where ``--output`` says.
- ``MilvusBackend``: one Milvus collection per corpus (dense vectors and BM25 weights), on Milvus Lite (a ``.db``
  file) or a Milvus server (``http://host:19530``); see ``retriever.index.milvus``.

Both give dense indexes with the same ``search`` / ``doc_ids`` / ``meta`` interface (``DenseIndex``) and lexical
ones with the same ``LexicalSearch`` interface, so every ranking still ends in ``retriever.ranking.topk.rank``.
``add``/``delete`` change a named index as one new version (FAISS: ``retriever.index.changes``).
``make_backend`` builds one from the CLI's ``--backend`` and ``--uri``; ``backend_for`` is the one an index (or an
index directory's path) belongs to.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

from retriever.encoding.encoder import Encoder, ModelInfo
from retriever.index.base import DenseIndex, Document, IndexConfig, LexicalSearch

__all__ = ["BACKENDS", "FaissBackend", "IndexBackend", "MilvusBackend", "backend_for", "make_backend"]

BACKENDS = ("faiss", "milvus")


class IndexBackend(ABC):
    """Builds, caches and opens the dense and lexical indexes of a corpus. ``target``: where one named index lives
    (a directory for FAISS, a collection name for Milvus)."""

    name: str

    @abstractmethod
    def ensure(self, dataset, encoder: Encoder, config: IndexConfig | None = None, *, lexical: bool = False,
               progress: bool = False) -> tuple[DenseIndex, LexicalSearch | None]:
        """``(dense index, lexical index or None)`` of ``dataset``, reused when current, else built."""

    @abstractmethod
    def check_target(self, target: str, overwrite: bool, lexical: bool = True) -> None:
        """Refuse, before any encoding, a ``build`` to ``target`` that would fail or replace something else."""

    @abstractmethod
    def build(self, dataset, encoder: Encoder, target: str, config: IndexConfig | None = None, *,
              lexical: bool = True, overwrite: bool = False, progress: bool = False
              ) -> tuple[DenseIndex, LexicalSearch | None]:
        """Build ``dataset``'s indexes at ``target``; ``(dense index, lexical index or None)``."""

    @abstractmethod
    def open(self, target: str, model: ModelInfo | None = None, device: str | None = None) -> DenseIndex:
        """The dense index at ``target`` (checked against ``model``); ``device``: search there with torch."""

    @abstractmethod
    def version(self, target: str) -> int:
        """The version of the index at ``target`` now (as its metadata records it: one more per ``add``/``delete``),
        read from its metadata alone, nothing loaded: how a long-running reader (the search service) knows to
        reopen it."""

    @abstractmethod
    def lexical_of(self, index: DenseIndex) -> LexicalSearch:
        """The lexical index that belongs to ``index`` (one this backend opened or built), checked against its
        corpus; a ValueError naming ``index`` and how to build one when it has none."""

    @abstractmethod
    def add(self, target: str, docs: Iterable[Document], encoder: Encoder, *, replace: bool = False,
            lexical: bool = True, progress: bool = False) -> tuple[DenseIndex, LexicalSearch | None]:
        """Encode only ``docs`` (with the base model that built ``target``) and append them to its dense index, its
        lexical index and its document store, as one new version. An id ``target`` holds is refused unless
        ``replace`` (then its old document goes). ``(dense index, lexical index or None)``."""

    @abstractmethod
    def delete(self, target: str, ids: Iterable[str], *, lexical: bool = True
               ) -> tuple[DenseIndex, LexicalSearch | None]:
        """Remove the documents ``ids`` from ``target``'s dense index, lexical index and document store, as one new
        version; an id it does not hold is an error naming it (nothing is removed)."""


class FaissBackend(IndexBackend):
    name = "faiss"

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        from retriever.storage.cache import default_cache_dir

        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def ensure(self, dataset, encoder, config=None, *, lexical=False, progress=False):
        from retriever.index.faiss_index import ensure_index
        from retriever.index.lexical import ensure_lexical_index

        index = ensure_index(dataset, encoder, self.cache_dir, config, progress=progress)
        return index, ensure_lexical_index(dataset, self.cache_dir) if lexical else None

    def check_target(self, target, overwrite, lexical=True):
        from retriever.index.faiss_index import check_output
        from retriever.index.lexical import check_lexical_output, lexical_path_for

        check_output(target, overwrite)
        if lexical:
            check_lexical_output(lexical_path_for(target), overwrite)

    def build(self, dataset, encoder, target, config=None, *, lexical=True, overwrite=False, progress=False):
        from retriever.index.faiss_index import build_index
        from retriever.index.lexical import build_lexical_index, lexical_path_for

        index = build_index(dataset, encoder, target, config, progress=progress, overwrite=overwrite)
        return index, build_lexical_index(dataset, lexical_path_for(target), overwrite=overwrite) if lexical else None

    def open(self, target, model=None, device=None):
        from retriever.index.faiss_index import CorpusIndex

        return CorpusIndex.load(target, model, device=device)

    def version(self, target):
        from retriever.index.changes import index_version
        from retriever.index.faiss_index import FORMAT_VERSION, KIND
        from retriever.storage.files import read_metadata

        return index_version(read_metadata(Path(target) / "index.json", KIND, FORMAT_VERSION))

    def lexical_of(self, index):
        """The BM25 index written beside ``index``: ``DIR-bm25`` beside an ``--output`` directory, or the cache
        entry of the same dataset beside a cached one (``lexical_beside``)."""
        from retriever.index.lexical import lexical_beside

        path = lexical_beside(index)
        if path is None:
            raise ValueError(f"no lexical index was found beside {index.path}; build it with `routerretriever index` "
                             "(without --no-lexical)")
        if "changes" in index.meta["source"]:  # changed by add/delete: BM25 follows it (repaired if behind)
            from retriever.index.changes import checked_lexical

            return checked_lexical(index, path)
        return self.open_lexical(path, index)

    def add(self, target, docs, encoder, *, replace=False, lexical=True, progress=False):
        """A new version of the index directory ``target`` (``retriever.index.changes``); cache entries are
        refused."""
        from retriever.index.changes import change_index

        return change_index(target, encoder, add=docs, replace=replace, lexical=lexical, progress=progress,
                            cache_dir=self.cache_dir)

    def delete(self, target, ids, *, lexical=True):
        from retriever.index.changes import change_index

        return change_index(target, delete=ids, lexical=lexical, cache_dir=self.cache_dir)

    def open_lexical(self, target: str | os.PathLike, index: DenseIndex | None = None) -> LexicalSearch:
        """The bm25s index directory at ``target`` (checked against the corpus of ``index``, when given)."""
        from retriever.index.lexical import LexicalIndex

        lexical = LexicalIndex.load(Path(target))
        if index is not None:
            lexical.check_corpus(index)
        return lexical


class MilvusBackend(IndexBackend):
    name = "milvus"

    def __init__(self, uri: str):
        from retriever.index.milvus import check_uri

        if not uri:
            raise ValueError("the milvus backend needs --uri: a .db file (Milvus Lite) or a server such as "
                             "http://localhost:19530")
        self.uri = check_uri(str(uri))  # before any model loads; connecting comes with the first use
        self._reader = None  # the client ``version`` reads metadata with

    def ensure(self, dataset, encoder, config=None, *, lexical=False, progress=False):
        from retriever.index.lexical import LexicalConfig
        from retriever.index.milvus_build import ensure_milvus_index

        index = ensure_milvus_index(dataset, encoder, self.uri, config, LexicalConfig() if lexical else None,
                                    progress=progress)
        return index, index.lexical() if lexical else None

    def check_target(self, target, overwrite, lexical=True):
        from retriever.index.milvus_build import check_milvus_target

        check_milvus_target(self.uri, target, overwrite)

    def build(self, dataset, encoder, target, config=None, *, lexical=True, overwrite=False, progress=False):
        from retriever.index.lexical import LexicalConfig
        from retriever.index.milvus_build import build_milvus_index

        index = build_milvus_index(dataset, encoder, self.uri, target, config, LexicalConfig() if lexical else None,
                                   progress=progress, overwrite=overwrite)
        return index, index.lexical()

    def open(self, target, model=None, device=None):
        from retriever.index.milvus import MilvusIndex

        if device is not None:
            raise ValueError(f"device {device!r}: a Milvus collection searches on its server, not on a torch device")
        return MilvusIndex.load(self.uri, str(target), model)

    def version(self, target):
        from retriever.index.changes import index_version
        from retriever.index.milvus import _client, _read_meta, check_collection_name

        if self._reader is None:  # one connection for every check of this backend
            self._reader = _client(self.uri)
        return index_version(_read_meta(self._reader, self.uri, check_collection_name(str(target))))

    def add(self, target, docs, encoder, *, replace=False, lexical=True, progress=False):
        """Insert ``docs`` into collection ``target`` with Milvus's insert (only they are encoded), their text kept
        beside their vectors; its BM25 side, when it has one, is refitted over every stored text so the rankings equal
        a fresh build's (``retriever.index.milvus_changes``). It lives in the collection, so it is always kept in step:
        ``lexical`` only says whether to return it."""
        from retriever.index.milvus_changes import add_documents

        with self._change_lock(target):
            index = add_documents(self.uri, str(target), docs, encoder, replace=replace, progress=progress)
        return index, index.lexical() if lexical else None

    def delete(self, target, ids, *, lexical=True):
        """Delete documents ``ids`` from collection ``target`` by primary key (BM25 refitted as for ``add``);
        ``(dense index, lexical index or None)`` as they are now."""
        from retriever.index.milvus_changes import delete_documents

        with self._change_lock(target):
            index = delete_documents(self.uri, str(target), ids)
        return index, index.lexical() if lexical else None

    @contextlib.contextmanager
    def _change_lock(self, target):
        """One writer per collection: the collection's writer lock (``retriever.index.milvus_lock``, kept on the
        Milvus itself, so it holds across hosts sharing a server); for a Milvus Lite file also the lock of
        ``add``/``delete`` on FAISS indexes, taken on ``.FILE-COLLECTION.lock`` beside the file."""
        from retriever.index.changes import index_lock
        from retriever.index.milvus import _client, _is_local
        from retriever.index.milvus_lock import writer_lock

        with contextlib.ExitStack() as stack:
            if _is_local(self.uri):
                stack.enter_context(index_lock(Path(self.uri).with_name(f"{Path(self.uri).name}-{target}")))
            stack.enter_context(writer_lock(_client(self.uri), self.uri, str(target)))
            yield

    def lexical_of(self, index):
        """The collection's own BM25 side."""
        lexical = index.lexical()
        if lexical is None:
            raise ValueError(f"{index.path} was built without BM25; rebuild it with `routerretriever index` (without "
                             "--no-lexical)")
        lexical.check_corpus(index)
        return lexical


def backend_for(index: DenseIndex | str | os.PathLike) -> IndexBackend:
    """The backend ``index`` belongs to: ``MilvusBackend`` (at its URI) for a ``MilvusIndex``, else
    ``FaissBackend`` (a ``CorpusIndex``, or the path of an index directory)."""
    from retriever.index.milvus import MilvusIndex

    return MilvusBackend(index.uri) if isinstance(index, MilvusIndex) else FaissBackend()


def make_backend(name: str = "faiss", uri: str | None = None, cache_dir: str | os.PathLike | None = None
                 ) -> IndexBackend:
    """The backend ``--backend NAME [--uri URI]`` asks for (FAISS indexes are cached under ``cache_dir``)."""
    if name == "faiss":
        if uri:
            raise ValueError(f"--uri {uri!r} is for --backend milvus; the faiss backend keeps indexes in the cache "
                             "directory (--cache-dir) or at --output")
        return FaissBackend(cache_dir)
    if name == "milvus":
        return MilvusBackend(uri)
    raise ValueError(f"unknown index backend {name!r}; valid: {', '.join(BACKENDS)}")
