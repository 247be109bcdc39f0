"""The corpus index in Milvus: dense vectors and BM25 in one collection, on Milvus Lite (a local ``.db`` file,
in-process) or on a Milvus server or cluster (``http://host:19530``), through the same ``pymilvus`` calls.

A collection ``NAME`` holds one row per document::

    row      INT64 primary key: the corpus order, so ``search`` returns rows like ``CorpusIndex.search``
    doc_id   the document id
    vector   the frozen base model's vector (FLOAT_VECTOR, inner product; FLAT, HNSW or IVF_FLAT from IndexConfig)
    bm25     (with the lexical side) the document's BM25 term weights as a sparse vector, searched by inner product

and describes itself in the collection property ``routerretriever.index`` (the metadata an ``index.json``
holds: kind, format, library version, model id + fingerprint, dim, config, count, corpus source + sha256, and a
sha256 of the vectors and ids). The BM25 vocabulary (token -> sparse index) is the collection ``NAME__vocab``.

Why BM25 weights and not Milvus's own BM25 function: on the same tokens and k1/b, Milvus Lite 3.2's function
scores another BM25 variant (SciFact nDCG@10 0.686 against bm25s's 0.676; the same top-10 for 2 of 300 queries;
docs/probe-log.md), so the two backends would rank differently. bm25s computes each document's term weights at
index time (as the FAISS backend's BM25 index does) and Milvus searches them server-side: a query's sparse
vector (its token counts) times a document's weights is exactly bm25s's score.

Building and reusing a collection is ``retriever.index.milvus_build``'s (its public names stay importable
from here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from retriever.encoding.encoder import ModelInfo
from retriever.index.base import DenseIndex, IndexConfig
from retriever.index.lexical import LexicalConfig, tokenize
from retriever.storage.cache import precision_suffix
from retriever.storage.files import (
    MODEL_SCHEMA,
    ArtifactError,
    check_finite,
    check_metadata,
    parse_json,
)

__all__ = [  # and, from retriever.index.milvus_build: build_milvus_index, check_milvus_target, ensure_milvus_index
    "MilvusIndex", "MilvusLexicalIndex", "check_collection_name", "check_uri", "default_collection", "insert_block",
]

logger = logging.getLogger(__name__)

KIND = "routerretriever-milvus-index"
FORMAT_VERSION = 1
META = "routerretriever.index"
VOCAB = "__vocab"
INCOMPLETE = "__incomplete_"
INSERT_BATCH = 512  # rows per insert call
SEARCH_BATCH = 1024  # queries per search call
NO_TERMS = 2**32 - 2  # sparse index of a document without terms (Milvus refuses empty sparse vectors); no query has it
MAX_VARCHAR = 65535
SCHEMA = {"files": dict, "model": MODEL_SCHEMA, "dim": int, "count": int, "config": dict, "source": dict,
          "lexical": (dict, type(None)), "precision?": str}
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
    if not isinstance(name, str) or not _NAME.fullmatch(name) or VOCAB in name or INCOMPLETE in name:
        raise ValueError(f"invalid Milvus collection name {name!r}: use 1-192 letters, digits and '_', starting with "
                         f"a letter or '_' (and without {VOCAB!r} or {INCOMPLETE!r}, which the library uses)")
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


def _scan(client, name: str, count: int, fields: list[str], page: int = 4096) -> Iterator[dict]:
    """Every row of ``name`` by primary-key ranges (``row`` is 0..count-1), in order."""
    for start in range(0, count, page):
        yield from sorted(client.query(name, filter=f"row >= {start} and row < {start + page}", output_fields=fields),
                          key=lambda r: r["row"])


class MilvusIndex(DenseIndex):
    """A corpus index in a Milvus collection, with ``CorpusIndex``'s interface: ``search(vectors, k)`` gives
    ``(scores, rows)``, ``doc_ids``, ``meta``, ``check_model``; ``embeddings`` reads the vectors back (the
    cached document side for expert training); ``lexical()`` is its BM25 side when it was built with one."""

    def __init__(self, client, uri: str, name: str, meta: dict, doc_ids: list[str]):
        self.client, self.uri, self.name, self.meta, self.doc_ids = client, uri, name, meta, doc_ids
        self.path = f"{uri}#{name}"  # names the index in messages and keys, like a directory does
        self._embeddings = None

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        query_vectors, k = self._queries(query_vectors, k)
        params = _search_params(self.config)
        hits = []
        for start in range(0, len(query_vectors), SEARCH_BATCH):
            hits += self.client.search(self.name, data=query_vectors[start : start + SEARCH_BATCH].tolist(),
                                       anns_field="vector", limit=k, search_params=params)
        return _rows(hits, k)

    @property
    def embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            vectors = np.zeros((len(self), self.dim), dtype=np.float32)
            for row in _scan(self.client, self.name, len(self), ["row", "vector"]):
                vectors[row["row"]] = row["vector"]
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
        doc_ids: list[str | None] = [None] * meta["count"]
        for row in _scan(client, name, meta["count"], ["row", "doc_id"]):
            if not 0 <= row["row"] < meta["count"] or doc_ids[row["row"]] is not None:
                raise ArtifactError(f"Milvus collection {name!r} at {uri} holds row {row['row']} twice or beyond "
                                    f"its {meta['count']} documents")
            doc_ids[row["row"]] = row["doc_id"]
        if any(d is None for d in doc_ids):
            missing = sum(d is None for d in doc_ids)
            raise ArtifactError(f"Milvus collection {name!r} at {uri} lacks {missing} of its {meta['count']} rows")
        if _sha(doc_ids) != meta["files"].get("doc_ids"):
            raise ArtifactError(f"Milvus collection {name!r} at {uri}: its document ids do not match the checksum "
                                "recorded when it was built")
        loaded = cls(client, uri, name, meta, doc_ids)
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
                                             limit=k, search_params={"metric_type": "IP"})
            for i, result in zip(batch, found, strict=True):
                hits[i] = list(result)
        scores, rows = _rows(hits, k)
        rows[scores <= 0] = -1  # as the FAISS backend's BM25: no shared term, not a match
        return scores, rows

    def check_corpus(self, index: DenseIndex) -> None:
        if index.doc_ids != self.doc_ids:
            raise ArtifactError(f"lexical index {self.path} was built from another corpus than {index.path}")


def insert_block(client, name: str, first: int, doc_ids: list[str], vectors: np.ndarray,
                 weights: list[dict] | None) -> str:
    """Insert rows ``first..`` of a build (ids, vectors, BM25 weights); the sha256 of the block's vectors.
    The one insert of every build, in this process or in a Ray worker."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    check_finite(vectors, f"the vectors of documents {doc_ids[0]!r}..{doc_ids[-1]!r}")
    client.insert(name, [{"row": first + i, "doc_id": doc_id, "vector": vectors[i].tolist(),
                          **({"bm25": weights[i]} if weights else {})} for i, doc_id in enumerate(doc_ids)])
    return hashlib.sha256(vectors.tobytes()).hexdigest()



def _rows(hits: list, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Milvus search hits as ``(scores, rows)`` padded with -1 rows, like FAISS."""
    scores = np.zeros((len(hits), k), dtype=np.float32)
    rows = np.full((len(hits), k), -1, dtype=np.int64)
    for i, result in enumerate(hits):
        for j, hit in enumerate(list(result)[:k]):
            scores[i, j], rows[i, j] = hit["distance"], hit["row"]
    return scores, rows


def _sha(doc_ids: list[str]) -> str:
    return hashlib.sha256(json.dumps(doc_ids).encode()).hexdigest()


_BUILT_IN_MILVUS_BUILD = ("build_milvus_index", "check_milvus_target", "ensure_milvus_index", "worker_uri")


def __getattr__(name: str):
    """The names that moved to ``retriever.index.milvus_build``, still importable from here (PEP 562)."""
    if name in _BUILT_IN_MILVUS_BUILD:
        from retriever.index import milvus_build

        return getattr(milvus_build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
