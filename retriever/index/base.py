"""What every corpus index shares: its configuration (``IndexConfig``, closed sets as enums), what it indexes
(``Doc``, ``CorpusSource``), the dense-index base class (``DenseIndex``) that FAISS (``faiss_index``) and
Milvus (``milvus``) indexes extend, the lexical-index interface (``LexicalSearch``) that bm25s (``lexical``) and
Milvus lexical indexes implement, and what every cache entry and build record of a dense index holds
(``is_current``, ``dense_record``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from retriever.encoding.encoder import Encoder, ModelInfo
from retriever.storage.cache import built_precision
from retriever.storage.files import (
    ArtifactError,
    library_version,
    sha256_file,
)

if TYPE_CHECKING:
    from retriever.index.lexical import LexicalConfig

STORED_BATCH = 1024  # documents read from an index's document store at a time (IndexedCorpus)

__all__ = ["CorpusSource", "DenseIndex", "Doc", "Document", "IndexConfig", "IndexType", "IndexedCorpus",
           "LexicalSearch", "Metric", "chunks", "corpus_source", "dense_record", "is_current"]


class IndexType(StrEnum):
    FLAT = "flat"
    HNSW = "hnsw"
    IVF = "ivf"


class Metric(StrEnum):
    INNER_PRODUCT = "inner_product"


def _enum_value(enum: type[Enum], value, what: str):
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(member.value for member in enum)
        raise ValueError(f"unknown {what} {value!r}; valid: {valid}") from None


@dataclass(frozen=True)
class IndexConfig:
    """How document vectors are searched. Exact inner product (``flat``) is the default."""

    index_type: IndexType = IndexType.FLAT
    metric: Metric = Metric.INNER_PRODUCT
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 256
    ivf_nlist: int | None = None  # default: about 4 * sqrt(n)
    ivf_nprobe: int = 32

    def __post_init__(self):
        object.__setattr__(self, "index_type", _enum_value(IndexType, self.index_type, "index type"))
        object.__setattr__(self, "metric", _enum_value(Metric, self.metric, "metric"))
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.ivf_nlist is not None and (not isinstance(self.ivf_nlist, int) or self.ivf_nlist < 1):
            raise ValueError(f"ivf_nlist must be a positive integer or None, got {self.ivf_nlist!r}")

    def to_json(self) -> dict:
        return {
            "index_type": self.index_type.value, "metric": self.metric.value,
            "hnsw_m": self.hnsw_m, "hnsw_ef_construction": self.hnsw_ef_construction,
            "hnsw_ef_search": self.hnsw_ef_search, "ivf_nlist": self.ivf_nlist, "ivf_nprobe": self.ivf_nprobe,
        }


class Doc(Protocol):
    id: str

    def content(self) -> str: ...


@dataclass(frozen=True)
class Document:
    """A document of a corpus or collection: what is indexed (``content``) and what search hits carry back
    (``title``, ``text``, ``metadata``: JSON-serialisable fields of the source row)."""

    id: str
    title: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def content(self) -> str:
        """The text that is embedded: ``title + " " + text``, as BEIR's SentenceBERT encodes documents."""
        return f"{self.title} {self.text}".strip()


class CorpusSource(Protocol):
    """What ``ensure_index`` needs of a dataset (``eval.Dataset`` is one)."""

    name: str
    corpus_path: Path

    def corpus(self) -> Iterator[Doc]: ...


class DenseIndex:
    """What every dense index shares (``CorpusIndex`` here, ``retriever.index.milvus.MilvusIndex``): ``doc_ids``,
    ``meta`` (as ``index.json`` holds it), ``path`` (names it in messages) and the checks of a search and a model.
    ``search(query_vectors, k) -> (scores, rows)`` is each backend's own."""

    doc_ids: list[str]
    meta: dict
    path: object

    def __len__(self) -> int:
        return len(self.doc_ids)

    def documents(self, ids: Sequence[str]) -> dict[str, dict]:
        """The stored documents of ``ids`` (``{"id", "title", "text", "metadata"}`` by id; those the index holds):
        what search hits carry back. Empty for an index built without its documents' text."""
        return {}

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def config(self) -> IndexConfig:
        return IndexConfig(**self.meta["config"])

    def _queries(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, int]:
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if query_vectors.ndim != 2 or query_vectors.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape (n, {self.dim}), got {query_vectors.shape}")
        return query_vectors, min(k, len(self))

    def check_model(self, model: ModelInfo) -> None:
        """Refuse query vectors from a model other than the one that encoded the corpus."""
        built = self.meta["model"]
        if not model.built(built):
            raise ArtifactError(
                f"index {self.path} was built with model {built['id']!r} (dim {built['dim']}, fingerprint "
                f"{built['fingerprint'][:12]}), but the query model is {model.id!r} (dim {model.dim}, "
                f"fingerprint {model.fingerprint[:12]}); rebuild the index with this model"
            )


class LexicalSearch(Protocol):
    """A lexical (BM25) index, as every caller uses one: ``LexicalIndex`` (bm25s, beside a FAISS index) and
    ``MilvusLexicalIndex`` (the BM25 side of a Milvus collection). ``search(texts, k) -> (scores, rows)`` with rows
    of -1 for documents sharing no term with the query; ``check_corpus`` refuses a dense index over other documents;
    ``meta["files"]`` identifies its content; ``path`` names it in messages."""

    doc_ids: list[str]
    meta: dict
    path: object

    def __len__(self) -> int: ...

    @property
    def config(self) -> LexicalConfig: ...

    def search(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def check_corpus(self, index: DenseIndex) -> None: ...


def chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@dataclass(frozen=True)
class IndexedCorpus:
    """The documents a named index holds, read back from its document store as a corpus: what an expert or a
    router learns a domain from without judgments when the domain is a collection (``index --corpus FILE
    --output DIR``), not a BEIR folder. ``name``: the index's (its directory's or Milvus collection's) name;
    ``record``: what reopens it (``{"backend", "target"}``, and ``"uri"`` for Milvus), as routers record it."""

    index: DenseIndex
    name: str
    record: Mapping[str, str]

    def corpus(self) -> Iterator[Document]:
        ids = list(self.index.doc_ids)
        for chunk in chunks(ids, STORED_BATCH):
            stored = self.index.documents(chunk)
            for doc_id in chunk:
                doc = stored.get(doc_id)
                if doc is None:
                    raise ValueError(f"index {self.index.path} holds no text for document {doc_id!r}: pseudo-queries "
                                     "are drawn from the documents' text; rebuild it with `routerretriever index`")
                yield Document(doc_id, doc["title"], doc["text"], doc.get("metadata") or {})

    def doc_ids(self) -> list[str]:
        return list(self.index.doc_ids)


def corpus_source(docs) -> dict:
    """What an index records of the corpus it was built from: a dataset's name, corpus file and its sha256 (``{}``
    for a plain collection of documents)."""
    if not hasattr(docs, "corpus_path"):
        return {}
    return {"dataset": docs.name, "corpus": str(docs.corpus_path), "corpus_sha256": sha256_file(docs.corpus_path)}



def is_current(meta: dict, source: dict, config: dict, precision: str | None = None) -> bool:
    """Whether a cache entry (its metadata ``meta``) still fits: built from the corpus ``source`` describes (the same
    sha256), with the settings ``config`` (``to_json()``) and, for a dense index, in ``precision``."""
    return meta["source"].get("corpus_sha256") == source["corpus_sha256"] and meta["config"] == config and \
        (precision is None or built_precision(meta) == precision)


def dense_record(kind: str, format_version: int, encoder: Encoder, config: IndexConfig, count: int,
                 source: dict) -> dict:
    """What a dense index records of itself (FAISS ``index.json``, the Milvus collection property), before its
    backend's own fields: kind, format and library version, model, precision, dim, metric, index type, settings,
    document count and corpus source."""
    return {
        "kind": kind,
        "format_version": format_version,
        "library_version": library_version(),
        "model": encoder.info.record(),
        "precision": encoder.precision,
        "dim": encoder.dim,
        "normalized": True,
        "metric": config.metric.value,
        "index_type": config.index_type.value,
        "config": config.to_json(),
        "count": count,
        "source": source,
    }
