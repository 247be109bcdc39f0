"""Building and reusing a corpus index in Milvus (the collection layout is ``retriever.index.milvus``'s): encode the
corpus (locally or on Ray workers, ``retriever.index.ray_encoder``), fit BM25 with bm25s and write both into one
collection, its BM25 vocabulary beside it.

A build writes ``NAME__incomplete_<pid>`` collections and renames them into place only when complete, so an
interrupted build never leaves a collection that looks complete; the next build removes what a dead local writer
left. Milvus Lite serves a ``.db`` file from the process that opened it (other processes on this machine, such as
Ray workers inserting their blocks, reach it through its server's port: ``worker_uri``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from retriever.encoding.encoder import Encoder
from retriever.index.base import IndexConfig, IndexType, corpus_source, dense_record, is_current
from retriever.index.faiss_index import ivf_nlist
from retriever.index.lexical import LexicalConfig, fit_bm25, tokenizer_versions
from retriever.index.milvus import (
    _METRIC,
    FORMAT_VERSION,
    INCOMPLETE,
    INSERT_BATCH,
    KIND,
    MAX_CHUNKS,
    MAX_VARCHAR,
    META,
    NO_TERMS,
    VOCAB,
    MilvusIndex,
    _client,
    _is_local,
    _sha,
    check_collection_name,
    default_collection,
    document_fields,
    insert_block,
)
from retriever.storage.artifacts import reuse_or_build
from retriever.storage.files import alive

__all__ = ["build_milvus_index", "check_milvus_target", "ensure_milvus_index", "worker_uri"]

logger = logging.getLogger(__name__)


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


def _bm25_rows(texts: list[str], config: LexicalConfig, known: dict[str, int] | None = None
               ) -> tuple[list[dict[int, float]], dict[str, int], str]:
    """Each document's BM25 term weights (bm25s's score matrix, transposed to rows), the vocabulary, and a sha256
    of the weights. With ``known`` (the vocabulary a collection has), its tokens keep their sparse indices and new
    tokens get the next ones, so a change only ever appends to the vocabulary collection."""
    from scipy.sparse import csc_matrix

    bm25 = fit_bm25(texts, config)
    s = bm25.scores
    matrix = csc_matrix((s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], len(s["indptr"]) - 1)).tocsr()
    vocab = {token: int(i) for token, i in bm25.vocab_dict.items()}
    if known is not None:
        new = sorted(set(vocab) - set(known))
        vocab = {**known, **{token: len(known) + i for i, token in enumerate(new)}}
        remap = np.zeros(max(matrix.shape[1], len(bm25.vocab_dict)), dtype=np.int64)  # bm25s adds a '' token
        for token, i in bm25.vocab_dict.items():
            remap[int(i)] = vocab[token]
        matrix.indices = remap[matrix.indices]
    weights = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        terms = {int(i): float(w) for i, w in zip(matrix.indices[start:end], matrix.data[start:end], strict=True)
                 if w != 0}
        weights.append(terms or {NO_TERMS: 1.0})
    digest = hashlib.sha256()
    for array in (matrix.indptr, matrix.indices, matrix.data):
        digest.update(np.ascontiguousarray(array).tobytes())
    return weights, vocab, digest.hexdigest()


def _create(client, name: str, dim: int, lexical: bool) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_VARCHAR)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    if lexical:
        schema.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("title", DataType.VARCHAR, max_length=MAX_VARCHAR)
    schema.add_field("text", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_CHUNKS,
                     max_length=MAX_VARCHAR)
    schema.add_field("metadata", DataType.JSON)
    client.create_collection(name, schema=schema)


def _create_indexes(client, name: str, config: IndexConfig, n: int, lexical: bool) -> None:
    """Index the collection once its rows are in (``sync=False``: Milvus Lite builds it at once, and its server
    lacks the timestamp call that waiting for an index uses)."""
    params = _dense_index_params(client, config, n)
    if lexical:
        params.add_index("bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    client.create_index(name, params, sync=False)


def insert_vocab(client, name: str, items: list[tuple[str, int]]) -> None:
    """Insert ``(token, sparse index)`` pairs into the vocabulary collection ``name``."""
    for start in range(0, len(items), 4 * INSERT_BATCH):
        client.insert(name, [{"token": t, "token_id": i, "unused": [0.0, 0.0]}
                             for t, i in items[start : start + 4 * INSERT_BATCH]])


def _create_vocab(client, name: str, vocab: dict[str, int]) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("token", DataType.VARCHAR, is_primary=True, max_length=MAX_VARCHAR)
    schema.add_field("token_id", DataType.INT64)
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field in every collection
    client.create_collection(name, schema=schema)
    insert_vocab(client, name, list(vocab.items()))
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


def check_ids(doc_ids: list[str]) -> None:
    """Refuse a document id Milvus cannot hold (its VARCHAR limit), naming it."""
    long = next((d for d in doc_ids if len(d.encode()) > MAX_VARCHAR), None)
    if long is not None:
        raise ValueError(f"document id {long[:40]!r}… is longer than Milvus's {MAX_VARCHAR} bytes")


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
    check_ids(doc_ids)
    fields = [document_fields(doc) for doc in docs]  # refuses what Milvus cannot hold, before any encoding
    weights, vocab, bm25_sha = _bm25_rows([doc.content() for doc in docs], lexical) if lexical else (None, None, None)
    tmp = f"{name}{INCOMPLETE}{os.getpid()}"
    for stale in (tmp, tmp + VOCAB):
        if client.has_collection(stale):
            client.drop_collection(stale)
    try:
        _create(client, tmp, encoder.dim, lexical is not None)
        blocks = [(start, doc_ids[start : start + INSERT_BATCH],
                   [d.content() for d in docs[start : start + INSERT_BATCH]],
                   weights[start : start + INSERT_BATCH] if weights else None, fields[start : start + INSERT_BATCH])
                  for start in range(0, len(docs), INSERT_BATCH)]
        with tqdm(total=len(docs), desc="encoding corpus", unit="doc", disable=not progress) as bar:
            if hasattr(encoder, "encode_into"):  # Ray workers encode and insert their blocks themselves
                digests = encoder.encode_into(worker_uri(uri), tmp, blocks, progress=bar.update)
            else:
                digests = []
                for first, ids, texts, block_weights, block_fields in blocks:
                    vectors = encoder.encode(texts, progress=bar.update)
                    digests.append(insert_block(client, tmp, first, ids, vectors, block_weights, block_fields))
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
            **dense_record(KIND, FORMAT_VERSION, encoder, config, len(docs),
                           source if source is not None else corpus_source(dataset)),
            "lexical": None if lexical is None else {"config": lexical.to_json(), "tokenizer": tokenizer_versions(),
                                                     "vocabulary": len(vocab), "sha256": bm25_sha},
            "files": {"vectors": digest.hexdigest(), "doc_ids": _sha(doc_ids)},
            "next_row": len(docs), "version": 0,
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
        return is_current(index.meta, source, config.to_json(), encoder.precision) and \
            (lexical is None or (have is not None and have["config"] == lexical.to_json()
                                 and have["tokenizer"] == tokenizer_versions()))

    return reuse_or_build(
        _client(uri).has_collection(name), f"Milvus collection {name} at {uri}",
        lambda: MilvusIndex.load(uri, name, encoder.info), current,
        lambda: build_milvus_index(dataset, encoder, uri, name, config, lexical, progress=progress, source=source,
                                   owned=True))
