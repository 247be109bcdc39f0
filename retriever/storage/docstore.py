"""The document store beside an index: ids, titles, texts and metadata in SQLite (Python's own ``sqlite3``), so
search hits can carry the text and BM25 can be rebuilt without the source file.

One file, ``docs.sqlite``, in the index directory; it is written inside the index's temporary directory and
renamed into place with it (``retriever.storage.artifacts.atomic_directory``), and listed with a checksum in the
index's metadata like every other data file. A change (``add``/``delete``) copies the store into the new version's
temporary directory and applies itself there in one transaction: readers of the old version never see half of it.

Table ``docs``: ``row`` (integer primary key, insertion order), ``id`` (text, unique), ``title``, ``text``,
``metadata`` (a JSON object). Table ``store``: ``key``/``value`` pairs (``schema_version``).
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from retriever.storage.files import ArtifactError, json_text, parse_json

__all__ = ["STORE_FILE", "DocStore", "StoredDoc"]

STORE_FILE = "docs.sqlite"
SCHEMA_VERSION = 1
_BATCH = 900  # ids per IN (...) query: below SQLite's default limit of 999 bound variables
_SCHEMA = """
CREATE TABLE docs (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, title TEXT NOT NULL, text TEXT NOT NULL,
                   metadata TEXT NOT NULL);
CREATE TABLE store (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

StoredDoc = dict[str, Any]  # {"id", "title", "text", "metadata"}: what a hit carries back


def _row(doc) -> tuple[str, str, str, str]:
    """A document (``retriever.index.base.Document`` or anything with ``id`` and ``content()``) as a store row."""
    title = getattr(doc, "title", "")
    text = getattr(doc, "text", None)
    metadata = getattr(doc, "metadata", None) or {}
    return doc.id, title or "", doc.content() if text is None else text, json_text(dict(metadata))


class DocStore:
    """An open document store (read-only unless opened by ``write``/``changed``); safe to share between threads."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self._connection = connection
        self._lock = threading.Lock()

    @classmethod
    def write(cls, path: str | Path, docs: Iterable) -> int:
        """Create a new store at ``path`` (a file that must not exist: inside a temporary directory) holding
        ``docs`` in their order, in one transaction; returns how many."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"document store {path} exists already")
        with sqlite3.connect(path) as connection:
            connection.executescript(_SCHEMA)
            connection.execute("INSERT INTO store VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            connection.executemany("INSERT INTO docs (id, title, text, metadata) VALUES (?, ?, ?, ?)",
                                   map(_row, docs))
            count = connection.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        connection.close()
        return count

    @classmethod
    def open(cls, path: str | Path) -> DocStore:
        """Open the store at ``path`` read-only, checking it is one (a damaged or foreign file is an ArtifactError)."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"no document store at {path}")
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            version = connection.execute("SELECT value FROM store WHERE key = 'schema_version'").fetchone()
            connection.execute("SELECT row, id, title, text, metadata FROM docs LIMIT 1").fetchall()
        except sqlite3.DatabaseError as err:
            raise ArtifactError(f"{path} is not a readable document store: {err}") from None
        if version is None or int(version[0]) > SCHEMA_VERSION:
            raise ArtifactError(f"{path}: document store schema {version and version[0]!r}, this library reads "
                                f"up to {SCHEMA_VERSION}")
        return cls(path, connection)

    def __len__(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def get(self, ids: Sequence[str]) -> dict[str, StoredDoc]:
        """The stored documents of ``ids`` (those present), by id."""
        found: dict[str, StoredDoc] = {}
        unique = list(dict.fromkeys(ids))
        with self._lock:
            for start in range(0, len(unique), _BATCH):
                batch = unique[start : start + _BATCH]
                rows = self._connection.execute(
                    f"SELECT id, title, text, metadata FROM docs WHERE id IN ({','.join('?' * len(batch))})", batch)
                found.update({doc_id: {"id": doc_id, "title": title, "text": text, "metadata": parse_json(meta)}
                              for doc_id, title, text, meta in rows})
        return found

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        with self._lock:
            return [doc_id for (doc_id,) in self._connection.execute("SELECT id FROM docs ORDER BY row")]

    def documents(self) -> Iterator[StoredDoc]:
        """Every stored document, in insertion order (a snapshot read: the store does not change while open)."""
        cursor = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            for doc_id, title, text, meta in cursor.execute("SELECT id, title, text, metadata FROM docs ORDER BY row"):
                yield {"id": doc_id, "title": title, "text": text, "metadata": parse_json(meta)}
        finally:
            cursor.close()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @staticmethod
    def changed(source: str | Path, target: str | Path, add: Iterable = (), delete: Iterable[str] = ()) -> int:
        """Copy the store at ``source`` to ``target`` (a new file: inside a new version's temporary directory),
        then delete ``delete`` and append ``add`` there in one transaction (ids to replace are deleted first);
        returns the new count. ``source`` is never written."""
        shutil.copyfile(source, target)
        with sqlite3.connect(target) as connection:
            doomed = list(delete)
            for start in range(0, len(doomed), _BATCH):
                batch = doomed[start : start + _BATCH]
                connection.execute(f"DELETE FROM docs WHERE id IN ({','.join('?' * len(batch))})", batch)
            connection.executemany("INSERT INTO docs (id, title, text, metadata) VALUES (?, ?, ?, ?)", map(_row, add))
            count = connection.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        connection.close()
        return count
