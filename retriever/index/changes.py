"""Changing a named FAISS index: ``add`` documents (only they are encoded) and ``delete`` them.

A change is a new version of the index directory, written to a temporary sibling and swapped into place
(``retriever.storage.artifacts.atomic_directory``): the old ``embeddings.npy`` rows that stay, copied, and the new
rows appended; ``doc_ids.json``; ``index.faiss`` (hnsw, ivf) built from the new matrix, so it equals a fresh build
of the same vectors; the document store changed in one transaction (``DocStore.changed``); ``index.json`` with
``version`` one higher and a ``source`` that says the index was changed (``{"collection", "changes",
"doc_ids_sha256"}``), so it is never taken for the cache entry of its original corpus file. Readers of the old
version keep it whole (its files are only renamed away).

bm25s cannot update an index, so the BM25 index beside (``DIR-bm25``) is then rebuilt from the new store's documents
with its old settings, and its ``source`` links the dense version it belongs to (``index_version``,
``doc_ids_sha256``). A change killed between the two swaps leaves BM25 one version behind: ``checked_lexical``
(what ``FaissBackend.lexical_of`` opens a changed index's BM25 through) sees it and rebuilds it from the store, with
a warning; nothing is lost.

One writer at a time: a change holds an exclusive ``flock`` on ``.DIR.lock`` beside the index for its whole
read-modify-write (a second writer fails at once, naming the holder's pid; the lock dies with its process).
Cache entries (``<cache>/indexes``) are rebuilt from their corpus file and are never changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from retriever.encoding.encoder import Encoder
from retriever.index import lexical as lexical_files
from retriever.index.base import Document, IndexType
from retriever.index.faiss_index import CHUNK_SIZE, FORMAT_VERSION, KIND, CorpusIndex, _faiss_index, encode_into
from retriever.index.lexical import LexicalConfig, LexicalIndex, build_lexical_index, lexical_path_for
from retriever.storage.artifacts import atomic_directory, remove_stale_temporaries
from retriever.storage.cache import built_precision
from retriever.storage.docstore import STORE_FILE, DocStore
from retriever.storage.files import (
    ArtifactError,
    checksum_files,
    library_version,
    read_metadata,
    write_json,
)

__all__ = ["IndexBusyError", "change_index", "checked_lexical", "doc_ids_sha256", "index_lock", "index_version",
           "lock_path", "plan_change", "rebuild_lexical", "write_dense_change"]

logger = logging.getLogger(__name__)


class IndexBusyError(OSError):
    """Another process is changing the index (it holds the index's lock)."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the index at ``path``: ``.NAME.lock`` beside it."""
    path = Path(os.path.abspath(path))
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def index_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of the index at ``path`` (non-blocking: an IndexBusyError naming the holder's pid
    when another process holds it). The lock file records the holder's pid; the kernel drops the lock when its
    process dies, however it dies."""
    lock = lock_path(path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise IndexBusyError(f"{Path(os.path.abspath(path))} is being changed by another process (pid {holder}); "
                                 "try again when it has finished") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def doc_ids_sha256(doc_ids: Sequence[str]) -> str:
    """Identifies an index's documents and their order."""
    return hashlib.sha256(json.dumps(list(doc_ids)).encode("utf-8")).hexdigest()


def index_version(meta: dict) -> int:
    """The version of an index (its metadata ``meta``): 1 as built, one more for every change."""
    return int(meta.get("version", 1))


def _names(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" (and {len(ids) - limit} more)" if len(ids) > limit else "")


@dataclass(frozen=True)
class Change:
    """What a change does to an index: the old rows it keeps, the ids it drops from the store (deleted or
    replaced), and the documents it appends."""

    keep: np.ndarray  # bool, one per old row
    dropped: list[str]
    added: list[Document]


def plan_change(index: CorpusIndex, add: Sequence[Document] = (), delete: Iterable[str] = (), replace: bool = False
                ) -> Change:
    """Check a change against ``index`` before anything is encoded: new ids unique and (unless ``replace``) not in
    the index, deleted ids in it, and at least one document left; errors name the offending ids."""
    rows = {doc_id: row for row, doc_id in enumerate(index.doc_ids)}
    new_ids = [doc.id for doc in add]
    bad = [doc_id for doc_id in new_ids if not isinstance(doc_id, str) or not doc_id]
    if bad:
        raise ValueError(f"document ids must be non-empty strings, got {_names(bad)}")
    repeated = sorted(doc_id for doc_id, count in Counter(new_ids).items() if count > 1)
    if repeated:
        raise ValueError(f"the new documents repeat the ids {_names(repeated)}; document ids must be unique")
    present = [doc_id for doc_id in new_ids if doc_id in rows]
    if present and not replace:
        raise ValueError(f"{index.path} already holds the documents {_names(present)}; pass --replace "
                         "(replace=True) to replace them")
    deleted = list(dict.fromkeys(delete))
    missing = [doc_id for doc_id in deleted if doc_id not in rows]
    if missing:
        raise ValueError(f"{index.path} holds no documents {_names(missing)}; nothing was deleted")
    dropped = list(dict.fromkeys([*deleted, *present]))
    if not dropped and not new_ids:
        raise ValueError(f"nothing to change in {index.path}: no documents to add or delete")
    if len(index) - len(dropped) + len(new_ids) == 0:
        raise ValueError(f"deleting {_names(deleted)} would leave {index.path} empty; an index holds at least one "
                         "document")
    keep = np.ones(len(index), dtype=bool)
    keep[[rows[doc_id] for doc_id in dropped]] = False
    return Change(keep, dropped, list(add))


def encode_documents(docs: Sequence[Document], encoder: Encoder, progress: bool = False) -> np.ndarray:
    """The base model's vectors of ``docs`` (float32 [n, dim]), encoded chunk by chunk as ``build_index`` does."""
    vectors = np.zeros((len(docs), encoder.dim), dtype=np.float32)
    with tqdm(total=len(docs), desc="encoding new documents", unit="doc", disable=not progress) as bar:
        encode_into(vectors, docs, encoder, bar.update)
    return vectors


def _changed_source(meta: dict, doc_ids: list[str]) -> dict:
    old = meta["source"]
    origin = old.get("collection") or old.get("corpus") or old.get("dataset")
    return {"collection": origin, "changes": int(old.get("changes", 0)) + 1, "doc_ids_sha256": doc_ids_sha256(doc_ids)}


def write_dense_change(index: CorpusIndex, change: Change, vectors: np.ndarray) -> CorpusIndex:
    """Write the next version of ``index``'s directory (dense vectors, ids, FAISS index, store, metadata): the
    dense half of a change. ``vectors``: those of ``change.added``, in order."""
    kept = np.flatnonzero(change.keep)
    doc_ids = [index.doc_ids[row] for row in kept] + [doc.id for doc in change.added]
    n, config = len(doc_ids), index.config
    with atomic_directory(index.path, ("index.json", KIND), overwrite=True) as tmp:
        matrix = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, index.dim))
        for start in range(0, len(kept), CHUNK_SIZE):
            rows = kept[start : start + CHUNK_SIZE]
            matrix[start : start + len(rows)] = index.embeddings[rows]
        matrix[len(kept) :] = vectors
        matrix.flush()
        (tmp / "doc_ids.json").write_text(json.dumps(doc_ids), encoding="utf-8")
        files = ["embeddings.npy", "doc_ids.json"]
        if config.index_type is not IndexType.FLAT:
            faiss.write_index(_faiss_index(config, matrix), str(tmp / "index.faiss"))
            files.append("index.faiss")
        del matrix
        stored = DocStore.changed(index.path / STORE_FILE, tmp / STORE_FILE, add=change.added, delete=change.dropped)
        if stored != n:
            raise ArtifactError(f"{index.path / STORE_FILE} would hold {stored} documents after the change, the "
                                f"index {n}; the store and the index disagree (rebuild the index)")
        files.append(STORE_FILE)
        meta = {**index.meta, "library_version": library_version(), "count": n,
                "version": index_version(index.meta) + 1, "source": _changed_source(index.meta, doc_ids)}
        write_json(tmp / "index.json", {**meta, "files": checksum_files(tmp, files)})
    return CorpusIndex.load(index.path, verify=False)


class _StoredCorpus:
    """A store's documents as a corpus (what ``build_lexical_index`` reads)."""

    def __init__(self, store: DocStore):
        self.store = store

    def corpus(self) -> Iterator[Document]:
        for doc in self.store.documents():
            yield Document(doc["id"], doc["title"], doc["text"], doc["metadata"])


def _lexical_config(path: Path) -> LexicalConfig | None:
    """The settings of the BM25 index at ``path`` (None when there is none; defaults, with a warning, when its
    metadata cannot be read)."""
    if not path.exists():
        return None
    try:
        meta = read_metadata(path / "lexical.json", lexical_files.KIND, lexical_files.FORMAT_VERSION)
        return LexicalConfig(**meta["config"])
    except (ArtifactError, TypeError, ValueError) as err:
        logger.warning("rebuilding %s with default BM25 settings: %s", path, err)
        return LexicalConfig()


def rebuild_lexical(index: CorpusIndex, config: LexicalConfig | None = None) -> LexicalIndex:
    """Rebuild the BM25 index beside ``index`` (``DIR-bm25``) from its document store, with ``config`` (default:
    the settings of the one there), linked to ``index``'s version: the lexical half of a change."""
    path = lexical_path_for(index.path)
    config = config or _lexical_config(path) or LexicalConfig()
    if index.store is None:
        raise ArtifactError(f"{index.path} has no document store to rebuild {path} from; rebuild both with "
                            "`routerretriever index`")
    source = {"collection": index.meta["source"].get("collection"), "index_version": index_version(index.meta),
              "doc_ids_sha256": doc_ids_sha256(index.doc_ids)}
    lexical = build_lexical_index(_StoredCorpus(index.store), path, config, source=source, overwrite=True)
    if lexical.doc_ids != index.doc_ids:
        raise ArtifactError(f"{index.path / STORE_FILE} lists its documents in another order than {index.path}; "
                            "rebuild the index")
    return lexical


def checked_lexical(index: CorpusIndex, path: str | os.PathLike) -> LexicalIndex:
    """The BM25 index at ``path`` that belongs to the changed ``index``: as it is when it is linked to ``index``'s
    version; rebuilt from the store (with a warning) when a change was interrupted before BM25 followed the dense
    index; an ArtifactError when ``index`` is older than it (changed since it was opened)."""
    lexical = LexicalIndex.load(path)
    linked, version = lexical.meta["source"].get("index_version"), index_version(index.meta)
    if linked == version and lexical.doc_ids == index.doc_ids:
        return lexical
    if isinstance(linked, int) and linked > version:
        raise ArtifactError(f"{index.path} was changed after it was opened (its BM25 index {path} is at version "
                            f"{linked}, the open index at {version}); open it again")
    with index_lock(index.path):
        current = index_version(read_metadata(index.path / "index.json", KIND, FORMAT_VERSION))
        if current != version:
            raise ArtifactError(f"{index.path} was changed after it was opened (version {current}, the open index "
                                f"{version}); open it again")
        logger.warning("%s is behind %s (a change was interrupted before BM25 was rebuilt); rebuilding it from the "
                       "document store", path, index.path)
        return rebuild_lexical(index, lexical.config)


def _cache_entry(path: Path, cache_dir: str | os.PathLike | None) -> bool:
    """Whether ``path`` is a dense cache entry: under ``cache_dir/indexes``, or (any cache) in an ``indexes``
    directory under the name ``default_index_path`` gives its dataset and model."""
    if cache_dir is not None and path.parent.resolve() == (Path(cache_dir) / "indexes").resolve():
        return True
    try:
        meta = read_metadata(path / "index.json", KIND, FORMAT_VERSION)
        dataset, fingerprint = meta["source"].get("dataset"), meta["model"]["fingerprint"]
    except (ArtifactError, KeyError, TypeError, AttributeError):
        return False
    return path.parent.name == "indexes" and isinstance(dataset, str) and isinstance(fingerprint, str) and \
        path.name.startswith(f"{dataset}-{fingerprint[:12]}-")


def check_changeable(path: Path, cache_dir: str | os.PathLike | None) -> None:
    """Refuse a cache entry (it belongs to its corpus file and is rebuilt whenever that changes) and a path that
    holds no index."""
    if not (path / "index.json").is_file():
        raise FileNotFoundError(f"no index at {path} (no index.json); build one with `routerretriever index --output`")
    if _cache_entry(path, cache_dir):
        raise ValueError(f"{path} is a cache entry, rebuilt from its corpus file whenever that changes, so it is never "
                         "changed in place; build a named index with `routerretriever index --corpus/--dataset ... "
                         "--output DIR` and change DIR")


def _new_documents(add) -> list[Document]:
    docs = list(add.corpus() if hasattr(add, "corpus") else add)
    bad = [doc for doc in docs if not hasattr(doc, "id") or not hasattr(doc, "content")]
    if bad:
        raise TypeError(f"documents to add need an id and content(), got {bad[0]!r}"[:300])
    return docs


def change_index(path: str | os.PathLike, encoder: Encoder | None = None, add: Iterable[Document] = (),
                 delete: Iterable[str] = (), *, replace: bool = False, lexical: bool = True, progress: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> tuple[CorpusIndex, LexicalIndex | None]:
    """Add ``add`` (documents, or a collection with ``corpus()``; encoded with ``encoder``, the base model that
    built the index) to the index directory at ``path`` and delete the ids ``delete``, as one new version, under
    the index's lock. Everything is checked before encoding; ``replace``: an added id the index holds replaces its
    document. ``lexical``: rebuild the BM25 index beside it, if there is one (otherwise it is rebuilt when next
    opened). ``(new dense index, new BM25 index or None)``."""
    path = Path(os.path.abspath(path))
    check_changeable(path, cache_dir)
    with index_lock(path):
        for target in (path, lexical_path_for(path)):
            remove_stale_temporaries(target)  # a killed writer's leftovers (a half swap is put back)
        index = CorpusIndex.load(path)
        if index.store is None:
            raise ArtifactError(f"{path} was built before document stores (it has no {STORE_FILE}); rebuild it with "
                                "`routerretriever index` to change it")
        docs = _new_documents(add)
        if docs:
            if encoder is None:
                raise ValueError("adding documents needs the encoder that built the index")
            index.check_model(encoder.info)
            if encoder.precision != built_precision(index.meta):
                raise ValueError(f"{path} was encoded in {built_precision(index.meta)}, the encoder is "
                                 f"{encoder.precision}; add with --precision {built_precision(index.meta)}")
        change = plan_change(index, docs, delete, replace)
        vectors = encode_documents(docs, encoder, progress) if docs else np.zeros((0, index.dim), np.float32)
        config = _lexical_config(lexical_path_for(path))
        changed = write_dense_change(index, change, vectors)
        index.store.close()
        bm25 = rebuild_lexical(changed, config) if lexical and config is not None else None
    logger.info("%s: version %d, %d documents (%d added, %d removed)", path, index_version(changed.meta),
                len(changed), len(docs), len(change.dropped))
    return changed, bm25
