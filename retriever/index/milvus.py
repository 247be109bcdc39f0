"""The corpus index in Milvus: dense vectors and BM25 in one collection, on Milvus Lite (a local ``.db`` file,
in-process) or on a Milvus server or cluster (``http://host:19530``), through the same ``pymilvus`` calls.

A collection ``NAME`` holds one row per document::

    row      INT64 primary key: the corpus order at build time; documents added later continue after the
             highest row ever written (``next_row`` in the metadata), deleted ones leave gaps. ``MilvusIndex`` keeps
             the live rows sorted and maps each hit's row to its position in ``doc_ids``, so ``search`` returns
             positions as ``CorpusIndex.search`` does, and a deleted row can never come back
    doc_id   the document id
    vector   the frozen base model's vector (FLOAT_VECTOR, inner product; FLAT, HNSW or IVF_FLAT from IndexConfig)
    bm25     (with the lexical side) the document's BM25 term weights as a sparse vector, searched by inner product
    title    (format 2) the document's title (VARCHAR; a title over 65535 bytes is refused, naming the document)
    text     (format 2) the document's text, cut at character boundaries into chunks of at most 65535 bytes (an
             ARRAY of VARCHAR, up to 4096 chunks): Milvus caps a VARCHAR at 65535 bytes, and refusing longer texts
             would refuse whole corpora of long documents; ``MilvusIndex.documents`` joins them back
    metadata (format 2) the document's metadata (JSON, at most 65535 bytes: Milvus's default JSON limit)

and describes itself in the collection property ``routerretriever.index`` (the metadata an ``index.json``
holds: kind, format, library version, model id + fingerprint, dim, config, count, corpus source + sha256, and a
sha256 of the vectors and ids; after an add or delete also ``version``, a counter, and a source marked
``changed``). The BM25 vocabulary (token -> sparse index) is the collection ``NAME__vocab``. Format 1 collections
(before documents were stored) still load and search; their ``documents`` is empty, and they cannot be changed.

Why BM25 weights and not Milvus's own BM25 function: on the same tokens and k1/b, Milvus Lite 3.2's function
scores another BM25 variant (SciFact nDCG@10 0.686 against bm25s's 0.676; the same top-10 for 2 of 300 queries;
docs/probe-log.md), so the two backends would rank differently. bm25s computes each document's term weights at
index time (as the FAISS backend's BM25 index does) and Milvus searches them server-side: a query's sparse
vector (its token counts) times a document's weights is exactly bm25s's score.

Building and reusing a collection is ``retriever.index.milvus_build``'s (its public names stay importable
from here); adding and deleting documents with Milvus's own insert/delete is ``retriever.index.milvus_changes``'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from retriever.encoding.encoder import ModelInfo
from retriever.index.base import DenseIndex, Document, IndexConfig
from retriever.index.lexical import LexicalConfig, tokenize
from retriever.storage.cache import precision_suffix
from retriever.storage.files import (
    MODEL_SCHEMA,
    ArtifactError,
    check_finite,
    check_metadata,
    json_text,
    parse_json,
)

__all__ = [  # and, from retriever.index.milvus_build: build_milvus_index, check_milvus_target, ensure_milvus_index
    "MilvusIndex", "MilvusLexicalIndex", "check_collection_name", "check_uri", "default_collection", "document_fields",
    "insert_block",
]

logger = logging.getLogger(__name__)

KIND = "routerretriever-milvus-index"
FORMAT_VERSION = 2  # 2: title, text and metadata stored; rows may have gaps after deletes (next_row)
META = "routerretriever.index"
VOCAB = "__vocab"
INCOMPLETE = "__incomplete_"
WRITER = "__writer"  # retriever.index.milvus_lock: NAME__writer (alias), NAME__writer_<hex> (markers)
INSERT_BATCH = 512  # rows per insert call
SEARCH_BATCH = 1024  # queries per search call
QUERY_BATCH = 1024  # rows per query by primary key
NO_TERMS = 2**32 - 2  # sparse index of a document without terms (Milvus refuses empty sparse vectors); no query has it
MAX_VARCHAR = 65535
MAX_CHUNKS = 4096  # text chunks per document (Milvus's largest ARRAY capacity)
STORED = ("title", "text", "metadata")  # the fields a format 2 collection keeps of each document
SCHEMA = {"files": dict, "model": MODEL_SCHEMA, "dim": int, "count": int, "config": dict, "source": dict,
          "lexical": (dict, type(None)), "precision?": str, "next_row?": int, "version?": int}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,191}")
_METRIC = {"inner_product": "IP"}


SCHEMES = ("http", "https", "tcp", "unix")  # what pymilvus connects to, besides a Milvus Lite .db path


def _is_local(uri: str) -> bool:
    return not re.match(r"[a-z]+://", uri)


def check_uri(uri: object) -> str:
    """``uri`` if it can name a Milvus, checked without connecting: a ``.db`` path (Milvus Lite: missing, or a
    directory Milvus Lite made; never a file or folder of the user's, which Milvus Lite would write into), or
    ``http(s)://`` / ``tcp://`` with a host, or ``unix://`` with a path. Anything else is a ValueError naming it
    (pymilvus itself would read ``http://`` as localhost:19530)."""
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"a Milvus URI is a .db file path (Milvus Lite) or a server address, got {uri!r}")
    if _is_local(uri):
        path = Path(uri).expanduser()
        if path.suffix != ".db":
            raise ValueError(f"Milvus Lite needs a file name ending in .db, got {uri!r} (or give a server URI such "
                             "as http://localhost:19530)")
        made_by_lite = path.is_dir() and ((path / "LOCK").is_file() or not any(path.iterdir()))
        if path.exists() and not made_by_lite:
            raise ValueError(f"{uri} is not a Milvus Lite database (Milvus Lite keeps a .db as a directory of its "
                             "own, with a LOCK file); refusing to use it")
        return uri
    parsed = urlsplit(uri)
    if parsed.scheme not in SCHEMES:
        raise ValueError(f"unsupported Milvus URI scheme {parsed.scheme!r} in {uri!r}: use a .db file (Milvus Lite) "
                         f"or {', '.join(f'{s}://' for s in SCHEMES)}, e.g. http://localhost:19530")
    try:
        parsed.port  # noqa: B018 (parses the port: out of range is a ValueError)
    except ValueError as err:
        raise ValueError(f"invalid Milvus URI {uri!r}: {err}") from None
    if not (parsed.netloc or parsed.path if parsed.scheme == "unix" else parsed.hostname):
        raise ValueError(f"Milvus URI {uri!r} names no server (e.g. http://localhost:19530)")
    return uri


def _client(uri: str):
    """A connected ``MilvusClient`` (``check_uri`` first); a failure to connect, or Milvus Lite's to open the
    file (another process holds it, say), is one ConnectionError naming the URI and the cause."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    check_uri(uri)
    if _is_local(uri):
        path = Path(uri).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = str(path)
    # Milvus Lite logs why it cannot serve a file as a traceback, and pymilvus then says only "Open local milvus
    # failed": keep that record (off the console) for the message instead
    log = logging.getLogger("milvus_lite.server_manager")
    kept, propagate = logging.handlers.BufferingHandler(100), log.propagate
    log.addHandler(kept)
    log.propagate = False
    try:
        return MilvusClient(uri)
    except MilvusException as err:
        causes = [r.exc_info[1] for r in kept.buffer if r.exc_info and r.exc_info[1] is not None]
        raise ConnectionError(f"cannot open Milvus at {uri}: {causes[-1] if causes else err.message}") from None
    finally:
        log.removeHandler(kept)
        log.propagate = propagate


def check_collection_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or any(r in name for r in (VOCAB, INCOMPLETE, WRITER)):
        raise ValueError(f"invalid Milvus collection name {name!r}: use 1-192 letters, digits and '_', starting with "
                         f"a letter or '_' (and without {VOCAB!r}, {INCOMPLETE!r} or {WRITER!r}, which the library "
                         "uses)")
    return name


def default_collection(dataset: str, model: ModelInfo, config: IndexConfig, precision: str = "fp32") -> str:
    """The collection a dataset's index gets unless told otherwise (the Milvus twin of the cache path)."""
    return check_collection_name(f"rr_{re.sub(r'[^A-Za-z0-9]', '_', dataset)}_{model.fingerprint[:12]}_"
                                 f"{config.index_type.value}{precision_suffix(precision, '_')}")


def _search_params(config: IndexConfig) -> dict:
    params = {"hnsw": {"ef": config.hnsw_ef_search}, "ivf": {"nprobe": config.ivf_nprobe}}
    return {"metric_type": _METRIC[config.metric.value], "params": params.get(config.index_type.value, {})}


def _read_meta(client, uri: str, name: str) -> dict:
    where = f"Milvus collection {name!r} at {uri}"
    if not client.has_collection(name):
        raise ArtifactError(f"no index collection {name!r} in Milvus at {uri}; build it with `routerretriever index "
                            f"--backend milvus --uri {uri} --dataset ...`")
    raw = client.describe_collection(name).get("properties", {}).get(META)
    if raw is None:
        raise ArtifactError(f"{where} is not a routerretriever index (no {META!r} property)")
    try:
        meta = parse_json(raw)
    except ValueError as err:
        raise ArtifactError(f"{where}: property {META!r} is not valid JSON: {err}") from None
    return check_metadata(meta, where, KIND, FORMAT_VERSION, SCHEMA)


def _scan(client, name: str, end: int, fields: list[str], page: int = 4096) -> Iterator[dict]:
    """Every row of ``name`` below row ``end`` (the metadata's ``next_row``), by primary-key ranges, in order."""
    for start in range(0, end, page):
        yield from sorted(client.query(name, filter=f"row >= {start} and row < {start + page}", output_fields=fields),
                          key=lambda r: r["row"])


def document_fields(doc) -> dict:
    """What a format 2 collection stores of ``doc`` (a ``Document``, or anything with ``id`` and ``content()``):
    title, text in chunks of at most 65535 bytes, metadata; a ValueError naming the document when Milvus could not
    hold it."""
    title, text = getattr(doc, "title", None) or "", getattr(doc, "text", None)
    text = doc.content() if text is None else text
    metadata = dict(getattr(doc, "metadata", None) or {})
    if len(title.encode()) > MAX_VARCHAR:
        raise ValueError(f"document {doc.id!r}: its title is longer than Milvus's {MAX_VARCHAR} bytes")
    if len(json_text(metadata).encode()) > MAX_VARCHAR:
        raise ValueError(f"document {doc.id!r}: its metadata is longer than {MAX_VARCHAR} bytes as JSON")
    chunks, size, start = [], 0, 0
    for at, char in enumerate(text):  # cut at character boundaries, each chunk at most MAX_VARCHAR bytes
        width = len(char.encode())
        if size + width > MAX_VARCHAR:
            chunks.append(text[start:at])
            start, size = at, 0
        size += width
    chunks.append(text[start:])
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"document {doc.id!r}: its text ({len(text.encode())} bytes) is longer than the "
                         f"{MAX_CHUNKS} chunks of {MAX_VARCHAR} bytes a Milvus collection keeps of one document")
    return {"title": title, "text": chunks, "metadata": metadata}


def stored_document(row: dict) -> dict:
    """A queried row's stored fields as a hit carries them back: ``{"id", "title", "text", "metadata"}``."""
    return {"id": row["doc_id"], "title": row["title"], "text": "".join(row["text"]),
            "metadata": dict(row["metadata"] or {})}


def stored_content(row: dict) -> str:
    """The text the build embedded and fed to BM25 (``Document.content``), from a queried row."""
    return Document(row["doc_id"], row["title"], "".join(row["text"])).content()


class MilvusIndex(DenseIndex):
    """A corpus index in a Milvus collection, with ``CorpusIndex``'s interface: ``search(vectors, k)`` gives
    ``(scores, rows)`` (rows: positions in ``doc_ids``), ``doc_ids``, ``meta``, ``check_model``; ``embeddings``
    reads the vectors back (the cached document side for expert training); ``lexical()`` is its BM25 side when it
    was built with one; ``documents(ids)`` the stored title, text and metadata (format 2).

    ``rows`` holds the collection's primary keys of ``doc_ids``, ascending. A reader opened before documents were
    added does not know their rows and leaves them out of its hits until reopened; deleted rows are gone at once."""

    def __init__(self, client, uri: str, name: str, meta: dict, doc_ids: list[str], rows: np.ndarray | None = None,
                 stored: bool = False):
        self.client, self.uri, self.name, self.meta, self.doc_ids = client, uri, name, meta, doc_ids
        self.path = f"{uri}#{name}"  # names the index in messages and keys, like a directory does
        self.rows = np.arange(len(doc_ids), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self.stored = stored  # whether the collection keeps title, text and metadata (format 2)
        self._embeddings = None
        self._row_of: dict[str, int] | None = None

    def _at(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions in ``doc_ids`` of collection rows, and which of them this index holds."""
        at = np.minimum(np.searchsorted(self.rows, rows), max(len(self.rows) - 1, 0))
        return at, (self.rows[at] == rows) if len(self.rows) else np.zeros(len(rows), dtype=bool)

    def _positions(self, hits: list, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Milvus search hits as ``(scores, positions)`` padded with -1, like FAISS (rows it does not hold left out)."""
        scores = np.zeros((len(hits), k), dtype=np.float32)
        found = np.full((len(hits), k), -1, dtype=np.int64)
        for i, result in enumerate(hits):
            result = list(result)
            if not result:
                continue
            at, held = self._at(np.array([hit["row"] for hit in result], dtype=np.int64))
            kept = np.flatnonzero(held)[:k]
            scores[i, : len(kept)] = [result[j]["distance"] for j in kept]
            found[i, : len(kept)] = at[kept]
        return scores, found

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        query_vectors, k = self._queries(query_vectors, k)
        params = _search_params(self.config)
        hits = []
        for start in range(0, len(query_vectors), SEARCH_BATCH):
            hits += self.client.search(self.name, data=query_vectors[start : start + SEARCH_BATCH].tolist(),
                                       anns_field="vector", limit=k, search_params=params, output_fields=["row"])
        return self._positions(hits, k)

    def documents(self, ids: Sequence[str]) -> dict[str, dict]:
        if not self.stored:
            return {}
        if self._row_of is None:
            self._row_of = dict(zip(self.doc_ids, self.rows.tolist(), strict=True))
        wanted = sorted({self._row_of[i] for i in ids if i in self._row_of})
        found = {}
        for start in range(0, len(wanted), QUERY_BATCH):
            batch = wanted[start : start + QUERY_BATCH]
            for row in self.client.query(self.name, filter=f"row in {batch}", output_fields=["doc_id", *STORED]):
                found[row["doc_id"]] = stored_document(row)
        return found

    @property
    def next_row(self) -> int:
        """The row the next added document gets: one past the highest row ever written."""
        return int(self.meta.get("next_row", self.meta["count"]))

    @property
    def embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            vectors = np.zeros((len(self), self.dim), dtype=np.float32)
            for row in _scan(self.client, self.name, self.next_row, ["row", "vector"]):
                at, held = self._at(np.array([row["row"]], dtype=np.int64))
                if held[0]:
                    vectors[at[0]] = row["vector"]
            self._embeddings = vectors
        return self._embeddings

    def lexical(self) -> MilvusLexicalIndex | None:
        return None if self.meta["lexical"] is None else MilvusLexicalIndex(self)

    @classmethod
    def load(cls, uri: str, name: str, model: ModelInfo | None = None) -> MilvusIndex:
        """Open collection ``name`` at ``uri``, checking its metadata, row count and ids."""
        client = _client(uri)
        meta = _read_meta(client, uri, check_collection_name(name))
        try:
            IndexConfig(**meta["config"])
        except (TypeError, ValueError) as err:
            raise ArtifactError(f"Milvus collection {name!r}: bad index config {meta['config']!r}: {err}") from None
        client.load_collection(name)
        if meta["lexical"] is not None:
            if not client.has_collection(name + VOCAB):
                raise ArtifactError(f"Milvus collection {name!r} at {uri} has a BM25 side but no vocabulary "
                                    f"collection {name + VOCAB!r}; rebuild it")
            client.load_collection(name + VOCAB)
        found = [(row["row"], row["doc_id"]) for row in
                 _scan(client, name, meta.get("next_row", meta["count"]), ["row", "doc_id"])]
        if len(found) != meta["count"]:
            raise ArtifactError(f"Milvus collection {name!r} at {uri} "
                                + (f"lacks {meta['count'] - len(found)} of its {meta['count']} rows"
                                   if len(found) < meta["count"] else
                                   f"holds {len(found)} rows, more than its {meta['count']} documents"))
        doc_ids = [doc_id for _, doc_id in found]
        if _sha(doc_ids) != meta["files"].get("doc_ids"):
            raise ArtifactError(f"Milvus collection {name!r} at {uri}: its document ids do not match the checksum "
                                "recorded when it was built")
        fields = {field["name"] for field in client.describe_collection(name).get("fields", [])}
        loaded = cls(client, uri, name, meta, doc_ids, np.array([row for row, _ in found], dtype=np.int64),
                     stored=set(STORED) <= fields)
        if model is not None:
            loaded.check_model(model)
        return loaded


class MilvusLexicalIndex:
    """The BM25 side of a ``MilvusIndex``: a ``retriever.index.base.LexicalSearch``, as ``LexicalIndex`` is."""

    def __init__(self, index: MilvusIndex):
        self.index, self.doc_ids, self.path = index, index.doc_ids, index.path
        lexical = index.meta["lexical"]
        self.meta = {**lexical, "source": index.meta["source"],
                     "files": {"doc_ids": index.meta["files"]["doc_ids"], "bm25": lexical["sha256"]}}

    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def config(self) -> LexicalConfig:
        return LexicalConfig(**self.meta["config"])

    def _token_ids(self, tokens: set[str]) -> dict[str, int]:
        client, vocab = self.index.client, self.index.name + VOCAB
        found = {}
        ordered = sorted(tokens)
        for start in range(0, len(ordered), 4096):
            for row in client.get(vocab, ids=ordered[start : start + 4096], output_fields=["token_id"]):
                found[row["token"]] = int(row["token_id"])
        return found

    def search(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        tokens = tokenize(list(texts), self.config)
        ids = self._token_ids({t for query in tokens for t in query})
        queries = []
        for query in tokens:
            counts: dict[int, float] = {}
            for token in query:
                if token in ids:
                    counts[ids[token]] = counts.get(ids[token], 0.0) + 1.0
            queries.append(counts)
        hits: list[list[dict]] = [[] for _ in queries]
        asked = [i for i, q in enumerate(queries) if q]  # a query without a known term matches nothing
        for start in range(0, len(asked), SEARCH_BATCH):
            batch = asked[start : start + SEARCH_BATCH]
            found = self.index.client.search(self.index.name, data=[queries[i] for i in batch], anns_field="bm25",
                                             limit=k, search_params={"metric_type": "IP"}, output_fields=["row"])
            for i, result in zip(batch, found, strict=True):
                hits[i] = list(result)
        scores, rows = self.index._positions(hits, k)
        rows[scores <= 0] = -1  # as the FAISS backend's BM25: no shared term, not a match
        return scores, rows

    def check_corpus(self, index: DenseIndex) -> None:
        if index.doc_ids != self.doc_ids:
            raise ArtifactError(f"lexical index {self.path} was built from another corpus than {index.path}")


def insert_block(client, name: str, first: int, doc_ids: list[str], vectors: np.ndarray,
                 weights: list[dict] | None, fields: list[dict] | None = None) -> str:
    """Insert rows ``first..`` (ids, vectors, BM25 weights, and the stored ``fields`` of ``document_fields``);
    the sha256 of the block's vectors. The one insert of every build and every add, in this process or in a Ray
    worker."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    check_finite(vectors, f"the vectors of documents {doc_ids[0]!r}..{doc_ids[-1]!r}")
    client.insert(name, [{"row": first + i, "doc_id": doc_id, "vector": vectors[i].tolist(),
                          **({"bm25": weights[i]} if weights else {}), **(fields[i] if fields else {})}
                         for i, doc_id in enumerate(doc_ids)])
    return hashlib.sha256(vectors.tobytes()).hexdigest()


def _sha(doc_ids: list[str]) -> str:
    return hashlib.sha256(json.dumps(doc_ids).encode()).hexdigest()


_BUILT_IN_MILVUS_BUILD = ("build_milvus_index", "check_milvus_target", "ensure_milvus_index", "worker_uri")


def __getattr__(name: str):
    """The names that moved to ``retriever.index.milvus_build``, still importable from here (PEP 562)."""
    if name in _BUILT_IN_MILVUS_BUILD:
        from retriever.index import milvus_build

        return getattr(milvus_build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
