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

A build writes ``NAME__incomplete_<pid>`` collections and renames them into place only when complete, so an
interrupted build never leaves a collection that looks complete; the next build removes what a dead local writer
left. Milvus Lite serves a ``.db`` file from the process that opened it (other processes on this machine, such as
Ray workers inserting their blocks, reach it through its server's port: ``worker_uri``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from tqdm.auto import tqdm

from retriever.encoding.encoder import Encoder, ModelInfo
from retriever.index.base import DenseIndex, IndexConfig, IndexType, corpus_source
from retriever.index.faiss_index import ivf_nlist
from retriever.index.lexical import LexicalConfig, fit_bm25, tokenize, tokenizer_versions
from retriever.storage.artifacts import reuse_or_build
from retriever.storage.cache import built_precision, precision_suffix
from retriever.storage.files import (
    MODEL_SCHEMA,
    ArtifactError,
    alive,
    check_finite,
    check_metadata,
    library_version,
    parse_json,
)

__all__ = [
    "MilvusIndex", "MilvusLexicalIndex", "build_milvus_index", "check_uri", "default_collection", "ensure_milvus_index",
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


def _dense_index_params(client, config: IndexConfig, n: int):
    params = client.prepare_index_params()
    metric = _METRIC[config.metric.value]
    if config.index_type is IndexType.FLAT:
        params.add_index("vector", index_type="FLAT", metric_type=metric)
    elif config.index_type is IndexType.HNSW:
        params.add_index("vector", index_type="HNSW", metric_type=metric,
                         params={"M": config.hnsw_m, "efConstruction": config.hnsw_ef_construction})
    else:
        params.add_index("vector", index_type="IVF_FLAT", metric_type=metric,
                         params={"nlist": ivf_nlist(config, n)})
    return params


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
    """The BM25 side of a ``MilvusIndex``, with ``LexicalIndex``'s interface: ``search(texts, k)``."""

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

    def check_corpus(self, index) -> None:
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


def worker_uri(uri: str) -> str:
    """How another process on this machine reaches ``uri``: a server URI as it is; a Milvus Lite file through the
    port of the server this process runs for it (so Ray workers on this machine can insert into it)."""
    if not _is_local(uri):
        return uri
    from milvus_lite.server_manager import server_manager_instance

    found = server_manager_instance.start_and_get_uri(str(Path(uri).expanduser()))  # the key pymilvus used
    if found is None:
        raise RuntimeError(f"Milvus Lite could not serve {uri} to other processes")
    return found


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


def _bm25_rows(texts: list[str], config: LexicalConfig) -> tuple[list[dict[int, float]], dict[str, int], str]:
    """Each document's BM25 term weights (bm25s's score matrix, transposed to rows), the vocabulary, and a sha256
    of the weights."""
    from scipy.sparse import csc_matrix

    bm25 = fit_bm25(texts, config)
    s = bm25.scores
    matrix = csc_matrix((s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], len(s["indptr"]) - 1)).tocsr()
    weights = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        terms = {int(i): float(w) for i, w in zip(matrix.indices[start:end], matrix.data[start:end], strict=True)
                 if w != 0}
        weights.append(terms or {NO_TERMS: 1.0})
    digest = hashlib.sha256()
    for array in (matrix.indptr, matrix.indices, matrix.data):
        digest.update(np.ascontiguousarray(array).tobytes())
    return weights, {token: int(i) for token, i in bm25.vocab_dict.items()}, digest.hexdigest()


def _create(client, name: str, dim: int, lexical: bool) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_VARCHAR)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    if lexical:
        schema.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
    client.create_collection(name, schema=schema)


def _create_indexes(client, name: str, config: IndexConfig, n: int, lexical: bool) -> None:
    """Index the collection once its rows are in (``sync=False``: Milvus Lite builds it at once, and its server
    lacks the timestamp call that waiting for an index uses)."""
    params = _dense_index_params(client, config, n)
    if lexical:
        params.add_index("bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    client.create_index(name, params, sync=False)


def _create_vocab(client, name: str, vocab: dict[str, int]) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("token", DataType.VARCHAR, is_primary=True, max_length=MAX_VARCHAR)
    schema.add_field("token_id", DataType.INT64)
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field in every collection
    client.create_collection(name, schema=schema)
    items = list(vocab.items())
    for start in range(0, len(items), 4 * INSERT_BATCH):
        client.insert(name, [{"token": t, "token_id": i, "unused": [0.0, 0.0]}
                             for t, i in items[start : start + 4 * INSERT_BATCH]])
    params = client.prepare_index_params()
    params.add_index("unused", index_type="FLAT", metric_type="IP")
    client.create_index(name, params, sync=False)


def _remove_stale(client, uri: str, name: str) -> None:
    """Drop what a killed local build of ``name`` left (``NAME__incomplete_<pid>`` of a dead process)."""
    for other in client.list_collections():
        match = re.fullmatch(rf"{re.escape(name)}{INCOMPLETE}(\d+)(?:{VOCAB})?", other)
        if match and _is_local(uri) and not alive(int(match.group(1))):
            logger.warning("dropping Milvus collection %s, left by an interrupted build", other)
            client.drop_collection(other)
        elif match:
            logger.warning("Milvus collection %s is another build of %s in progress (or an interrupted one on "
                           "another host; drop it yourself if so)", other, name)


def _check_target(client, uri: str, name: str, overwrite: bool, owned: bool) -> None:
    if not client.has_collection(name) or owned:
        return
    try:
        ours = json.loads(client.describe_collection(name).get("properties", {}).get(META, "{}")).get("kind") == KIND
    except (json.JSONDecodeError, AttributeError):
        ours = False
    if not ours:
        raise FileExistsError(f"Milvus collection {name!r} at {uri} exists and is not a routerretriever index; "
                              "refusing to replace it")
    if not overwrite:
        raise FileExistsError(f"Milvus collection {name!r} at {uri} already exists; pass --overwrite to replace it")


def check_milvus_target(uri: str, name: str, overwrite: bool) -> None:
    """Whether ``build_milvus_index`` may write ``name`` at ``uri``, checked before any encoding."""
    _check_target(_client(uri), uri, check_collection_name(name), overwrite, owned=False)


def build_milvus_index(dataset, encoder: Encoder, uri: str, name: str | None = None,
                       config: IndexConfig | None = None, lexical: LexicalConfig | None = None, *,
                       progress: bool = False, source: dict | None = None, overwrite: bool = True,
                       owned: bool = False) -> MilvusIndex:
    """Encode ``dataset``'s corpus (``encoder``: local or ``RayEncoder``) into collection ``name`` at ``uri`` (default
    ``default_collection``), with the BM25 side when ``lexical`` is given. An existing collection is replaced only
    once the new one is complete, and only if it is a routerretriever index (``owned``: whatever it holds)."""
    config = config or IndexConfig()
    name = check_collection_name(name or default_collection(dataset.name, encoder.info, config, encoder.precision))
    client = _client(uri)
    _check_target(client, uri, name, overwrite, owned)
    _remove_stale(client, uri, name)
    docs = list(dataset.corpus())
    doc_ids = [doc.id for doc in docs]
    if not doc_ids:
        raise ValueError("cannot index an empty corpus")
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("document ids must be unique")
    long = next((d for d in doc_ids if len(d.encode()) > MAX_VARCHAR), None)
    if long is not None:
        raise ValueError(f"document id {long[:40]!r}… is longer than Milvus's {MAX_VARCHAR} bytes")
    weights, vocab, bm25_sha = _bm25_rows([doc.content() for doc in docs], lexical) if lexical else (None, None, None)
    tmp = f"{name}{INCOMPLETE}{os.getpid()}"
    for stale in (tmp, tmp + VOCAB):
        if client.has_collection(stale):
            client.drop_collection(stale)
    try:
        _create(client, tmp, encoder.dim, lexical is not None)
        blocks = [(start, doc_ids[start : start + INSERT_BATCH],
                   [d.content() for d in docs[start : start + INSERT_BATCH]],
                   weights[start : start + INSERT_BATCH] if weights else None)
                  for start in range(0, len(docs), INSERT_BATCH)]
        with tqdm(total=len(docs), desc="encoding corpus", unit="doc", disable=not progress) as bar:
            if hasattr(encoder, "encode_into"):  # Ray workers encode and insert their blocks themselves
                digests = encoder.encode_into(worker_uri(uri), tmp, blocks, progress=bar.update)
            else:
                digests = []
                for first, ids, texts, block_weights in blocks:
                    vectors = encoder.encode(texts, progress=bar.update)
                    digests.append(insert_block(client, tmp, first, ids, vectors, block_weights))
        digest = hashlib.sha256("".join(digests).encode())  # identifies this build's vectors, block by block
        if vocab is not None:
            _create_vocab(client, tmp + VOCAB, vocab)
            client.flush(tmp + VOCAB)
        client.flush(tmp)
        _create_indexes(client, tmp, config, len(docs), lexical is not None)
        count = client.get_collection_stats(tmp)["row_count"]
        if count != len(docs):
            raise RuntimeError(f"Milvus holds {count} of the {len(docs)} rows written to {tmp}")
        meta = {
            "kind": KIND, "format_version": FORMAT_VERSION, "library_version": library_version(),
            "model": {"id": encoder.info.id, "fingerprint": encoder.info.fingerprint, "dim": encoder.dim},
            "precision": encoder.precision, "dim": encoder.dim, "normalized": True, "metric": config.metric.value,
            "index_type": config.index_type.value, "config": config.to_json(), "count": len(docs),
            "source": source if source is not None else corpus_source(dataset),
            "lexical": None if lexical is None else {"config": lexical.to_json(), "tokenizer": tokenizer_versions(),
                                                     "vocabulary": len(vocab), "sha256": bm25_sha},
            "files": {"vectors": digest.hexdigest(), "doc_ids": _sha(doc_ids)},
        }
        client.alter_collection_properties(tmp, properties={META: json.dumps(meta)})
        # the old index goes first (never an index beside another build's vocabulary), the new one last: its
        # name appearing marks completion
        for old in (name, name + VOCAB):
            if client.has_collection(old):
                client.drop_collection(old)
        if vocab is not None:
            client.rename_collection(tmp + VOCAB, name + VOCAB)
        client.rename_collection(tmp, name)
    except BaseException:
        for stale in (tmp, tmp + VOCAB):
            if client.has_collection(stale):
                client.drop_collection(stale)
        raise
    logger.info("indexed %d documents into Milvus collection %s at %s", len(docs), name, uri)
    return MilvusIndex.load(uri, name, encoder.info)


def ensure_milvus_index(dataset, encoder: Encoder, uri: str, config: IndexConfig | None = None,
                        lexical: LexicalConfig | None = None, *, progress: bool = False) -> MilvusIndex:
    """The dataset's collection at ``uri`` (``default_collection``), built when absent, stale (corpus, settings,
    model) or without the BM25 side ``lexical`` asks for."""
    config = config or IndexConfig()
    name = default_collection(dataset.name, encoder.info, config, encoder.precision)
    source = corpus_source(dataset)

    def current(index: MilvusIndex) -> bool:
        have = index.meta["lexical"]
        return index.meta["source"].get("corpus_sha256") == source["corpus_sha256"] and \
            index.meta["config"] == config.to_json() and built_precision(index.meta) == encoder.precision and \
            (lexical is None or (have is not None and have["config"] == lexical.to_json()
                                 and have["tokenizer"] == tokenizer_versions()))

    return reuse_or_build(
        _client(uri).has_collection(name), f"Milvus collection {name} at {uri}",
        lambda: MilvusIndex.load(uri, name, encoder.info), current,
        lambda: build_milvus_index(dataset, encoder, uri, name, config, lexical, progress=progress, source=source,
                                   owned=True))
