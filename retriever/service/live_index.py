"""The index a service searches while ``add``/``delete`` change it: one ``IndexSnapshot`` (dense index, BM25 index,
document store: one version) behind one reference, replaced whole by a newer version.

A batch takes ``LiveIndex.current`` once and searches that snapshot to the end, so it sees the old version or the
new one, never half of each. ``refresh`` reads the version the target holds now (``IndexBackend.version``: its
metadata alone); when it is newer, it opens that version completely (dense index, the BM25 index belonging to it,
the document store opened at once rather than on first use) and checks the version again afterwards: a change
swapped in while it was opening (versions only grow) makes it try again, so a snapshot's three parts always come
from one version. A writer still between its dense and BM25 swaps (``retriever.index.changes``) holds the index's
lock: the old snapshot stays until the next check. The old snapshot stays searchable after the swap (its files
were only renamed away and are kept open), so batches already running on it finish.

That whole-version guarantee is FAISS's, whose changes write a new directory version. A Milvus collection is
changed in place (``retriever.index.milvus_changes``: rows, then BM25 weights, then the metadata's version), and a
snapshot searches the live collection: while a change runs, deleted documents vanish at once and BM25 weights may be
part refitted; the version (and so the reload) follows once the change has finished.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from retriever.encoding.encoder import ModelInfo
from retriever.index.backends import IndexBackend
from retriever.index.base import DenseIndex, LexicalSearch
from retriever.index.changes import IndexBusyError, index_version
from retriever.storage.files import ArtifactError

__all__ = ["IndexSnapshot", "LiveIndex"]

logger = logging.getLogger(__name__)

OPEN_TRIES = 3  # opens of a version that changed while it was being opened, before the old snapshot is kept


@dataclass(frozen=True)
class IndexSnapshot:
    """One version of an index, whole: what one batch searches."""

    dense: DenseIndex
    lexical: LexicalSearch | None  # None: the router chooses no BM25 system
    version: int

    def describe(self) -> dict:
        meta = self.dense.meta
        return {"path": str(self.dense.path), "name": os.path.basename(str(self.dense.path).rstrip("/")),
                "documents": len(self.dense), "version": self.version, "type": meta["config"].get("index_type"),
                "bm25": self.lexical is not None, "source": meta.get("source")}


class LiveIndex:
    """The current snapshot of the index ``target`` of ``backend`` (opened for queries of ``model``; ``device``:
    FAISS search on that torch device), replaced by ``refresh`` when the index has a newer version."""

    def __init__(self, backend: IndexBackend, target: str, model: ModelInfo, lexical: bool,
                 device: str | None = None):
        self.backend, self.target, self.model, self.needs_lexical, self.device = backend, target, model, lexical, device
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self.reloads = 0
        self.last_error: str | None = None
        self.current = self._open()

    def _open(self) -> IndexSnapshot:
        for _ in range(OPEN_TRIES):
            dense = self.backend.open(self.target, self.model, device=self.device)
            lexical = self.backend.lexical_of(dense) if self.needs_lexical else None
            getattr(dense, "store", None)  # FAISS opens its document store on first use: now, from this version
            version = index_version(dense.meta)
            if self.backend.version(self.target) == version:
                return IndexSnapshot(dense, lexical, version)
            logger.info("%s changed while it was being opened; opening it again", self.target)
        raise ArtifactError(f"{self.target} kept changing while it was being opened ({OPEN_TRIES} tries); try again")

    def refresh(self) -> bool:
        """Swap in the index's newest version if it is newer than the current snapshot; whether it did. A version
        that cannot be opened yet (a writer holds the index, or it changed again meanwhile) leaves the current
        snapshot in place (``last_error`` says why) and is tried again on the next call."""
        with self._lock:
            try:
                if self.backend.version(self.target) <= self.current.version:
                    self.last_error = None
                    return False
                snapshot = self._open()
            except (IndexBusyError, ArtifactError, FileNotFoundError, ConnectionError) as err:
                self.last_error = str(err)
                logger.info("keeping version %d of %s: %s", self.current.version, self.target, err)
                return False
            except Exception as err:  # noqa: BLE001 - e.g. a Milvus server's error: keep serving the current one
                self.last_error = f"{type(err).__name__}: {err}"
                logger.warning("keeping version %d of %s: %s", self.current.version, self.target, self.last_error)
                return False
            old, self.current = self.current, snapshot  # one reference: a batch sees one version whole
            self.reloads += 1
            self.last_error = None
        logger.info("%s: version %d -> %d (%d documents)", self.target, old.version, snapshot.version,
                    len(snapshot.dense))
        return True
