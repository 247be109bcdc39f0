"""The lexical side of the shared corpus: a BM25 index (bm25s) over the same documents as the dense index.

A lexical index directory describes itself like the dense one::

    lexical.json    format version, library version, BM25 settings, document count, corpus source + sha256,
                    sha256 of every file below
    doc_ids.json    row -> document id (the corpus order, as in the dense index)
    *.index.json, *.index.npy   bm25s's own files: params and vocabulary (JSON), the score matrix (no pickle)

It is cached beside the dense index (``<cache>/indexes/<dataset>-bm25-<settings key>``) and rebuilt when the
corpus or the settings change. ``search`` returns raw rows like ``CorpusIndex.search``, so every ranking ends
in ``retriever.ranking.topk.rank`` (self-hits dropped in one place).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from retriever.index.base import DenseIndex, corpus_source, is_current
from retriever.storage.artifacts import atomic_directory, cached_artifact, check_target, directory_files
from retriever.storage.files import (
    ArtifactError,
    check_finite,
    checksum_files,
    library_version,
    read_json,
    read_metadata,
    safe_name,
    verify_checksums,
    write_json,
)

__all__ = [
    "LexicalConfig", "LexicalIndex", "build_lexical_index", "ensure_lexical_index", "fit_bm25", "lexical_beside",
    "lexical_index_path", "lexical_path_for", "tokenize", "tokenizer_versions",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "routerretriever-lexical-index"
SCHEMA = {"files": dict, "config": dict, "count": int, "source": dict}
_BM25_FILES = ("params.index.json", "vocab.index.json", "data.csc.index.npy", "indices.csc.index.npy",
               "indptr.csc.index.npy")


@dataclass(frozen=True)
class LexicalConfig:
    """BM25 as Lucene scores it (bm25s ``method="lucene"``), English stemmer and stopwords, k1 0.9, b 0.4."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"  # a PyStemmer language, or None
    stopwords: str | None = "en"

    def __post_init__(self):
        if not isinstance(self.k1, int | float) or isinstance(self.k1, bool) or not 0 <= self.k1 < math.inf:
            raise ValueError(f"k1 must be a finite number >= 0, got {self.k1!r}")
        if not isinstance(self.b, int | float) or isinstance(self.b, bool) or not 0 <= self.b <= 1:
            raise ValueError(f"b must be a number in [0, 1], got {self.b!r}")
        methods = ("lucene", "robertson", "atire", "bm25l", "bm25+")
        if self.method not in methods:
            raise ValueError(f"unknown BM25 method {self.method!r}; valid: {', '.join(methods)}")

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """Identifies the settings in the cache path."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:12]


def tokenizer_versions() -> dict:
    """What else decides the tokens: bm25s's and PyStemmer's versions (an index is rebuilt when they change)."""
    from importlib.metadata import version

    return {"bm25s": version("bm25s"), "PyStemmer": version("PyStemmer")}


def _bm25s():
    """bm25s, its logger following the application's level again: bm25s sets it to DEBUG when imported, so an
    application that logs at INFO (``logging.basicConfig``) would print its DEBUG lines."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


def tokenize(texts: list[str], config: LexicalConfig) -> list[list[str]]:
    bm25s = _bm25s()

    stemmer = None
    if config.stemmer:
        import Stemmer

        stemmer = Stemmer.Stemmer(config.stemmer)
    return bm25s.tokenize(texts, stopwords=config.stopwords, stemmer=stemmer, return_ids=False,
                          show_progress=False)


def fit_bm25(texts: list[str], config: LexicalConfig):
    """bm25s's index of ``texts`` (tokenised as every query is): the one BM25 fit of every lexical backend."""
    bm25s = _bm25s()

    bm25 = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
    bm25.index(tokenize(texts, config), show_progress=False)
    return bm25


class LexicalIndex:
    """A loaded BM25 index (a ``retriever.index.base.LexicalSearch``). ``search(texts, k)`` gives ``(scores, rows)``;
    rows of documents sharing no term with the query are -1 (``rank`` skips them), so a query without known terms
    ranks nothing."""

    def __init__(self, path: Path | None, meta: dict, doc_ids: list[str], bm25):
        self.path, self.meta, self.doc_ids, self.bm25 = path, meta, doc_ids, bm25

    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def config(self) -> LexicalConfig:
        return LexicalConfig(**self.meta["config"])

    def search(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if not texts:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        tokens = tokenize(list(texts), self.config)
        rows, scores = self.bm25.retrieve(tokens, k=k, show_progress=False, n_threads=0, return_as="tuple")
        rows, scores = np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float32)
        rows[scores <= 0] = -1  # no shared term: not a match
        return scores, rows

    def check_corpus(self, index: DenseIndex) -> None:
        """Refuse a dense index over other documents: other ids, another order, or (where both record
        it) another corpus file content."""
        dense_sha = index.meta.get("source", {}).get("corpus_sha256")
        mine = self.meta["source"].get("corpus_sha256")
        if index.doc_ids != self.doc_ids or (dense_sha and mine and dense_sha != mine):
            raise ArtifactError(f"lexical index {self.path} was built from another corpus than the dense index "
                                f"{index.path}; rebuild it (routerretriever index)")

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> LexicalIndex:
        bm25s = _bm25s()

        path = Path(path)
        meta = read_metadata(path / "lexical.json", KIND, FORMAT_VERSION, SCHEMA)
        missing = {"doc_ids.json", *_BM25_FILES} - set(meta["files"])
        if missing:
            raise ArtifactError(f"{path / 'lexical.json'} lists no checksum for {', '.join(sorted(missing))}")
        if verify:
            verify_checksums(path, meta["files"])
        try:
            LexicalConfig(**meta["config"])
        except (TypeError, ValueError) as err:
            raise ArtifactError(f"{path / 'lexical.json'}: bad BM25 settings {meta['config']!r}: {err}") from None
        doc_ids = read_json(path / "doc_ids.json")
        if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids) or \
                len(doc_ids) != meta["count"]:
            raise ArtifactError(f"{path / 'doc_ids.json'} must list the {meta['count']} document ids")
        try:
            bm25 = bm25s.BM25.load(str(path), mmap=False, allow_pickle=False, load_corpus=False)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"{path} is not a readable bm25s index: {err}") from None
        if bm25.scores.get("num_docs") != meta["count"]:
            raise ArtifactError(f"{path} indexes {bm25.scores.get('num_docs')} documents, lexical.json "
                                f"says {meta['count']}")
        check_finite(np.asarray(bm25.scores["data"]), str(path / "data.csc.index.npy"))
        return cls(path, meta, doc_ids, bm25)


def build_lexical_index(dataset, path: str | os.PathLike, config: LexicalConfig | None = None, *,
                        source: dict | None = None, overwrite: bool = True, owned: bool = False) -> LexicalIndex:
    """Tokenise and index ``dataset``'s corpus (``title + " " + text``, as the dense side embeds it) at ``path``."""
    config = config or LexicalConfig()
    docs = list(dataset.corpus())
    doc_ids = [doc.id for doc in docs]
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("document ids must be unique")
    bm25 = fit_bm25([doc.content() for doc in docs], config)
    with atomic_directory(path, ("lexical.json", KIND), overwrite=overwrite, owned=owned) as tmp:
        bm25.save(str(tmp), show_progress=False)
        (tmp / "doc_ids.json").write_text(json.dumps(doc_ids), encoding="utf-8")
        files = directory_files(tmp)  # bm25s's own files (some methods write more than _BM25_FILES) and the ids
        write_json(tmp / "lexical.json", {
            "kind": KIND, "format_version": FORMAT_VERSION, "library_version": library_version(),
            "config": config.to_json(), "tokenizer": tokenizer_versions(), "count": len(doc_ids),
            "source": source or corpus_source(dataset),
            "files": checksum_files(tmp, files),
        })
    logger.info("BM25-indexed %d documents into %s", len(doc_ids), path)
    return LexicalIndex.load(path, verify=False)


def lexical_index_path(cache_dir: str | os.PathLike, name: str, config: LexicalConfig) -> Path:
    return Path(cache_dir) / "indexes" / f"{safe_name(name, 'dataset')}-bm25-{config.key}"


def ensure_lexical_index(dataset, cache_dir: str | os.PathLike, config: LexicalConfig | None = None
                         ) -> LexicalIndex:
    """Load the cached BM25 index of ``dataset``, or build it when absent, stale or damaged."""
    config = config or LexicalConfig()
    path = lexical_index_path(cache_dir, dataset.name, config)
    source = corpus_source(dataset)

    def current(index: LexicalIndex) -> bool:
        return is_current(index.meta, source, config.to_json()) and index.meta.get("tokenizer") == tokenizer_versions()

    return cached_artifact(path, "lexical.json", "lexical index", LexicalIndex.load, current,
                           lambda: build_lexical_index(dataset, path, config, source=source, owned=True))


def check_lexical_output(path: str | os.PathLike, overwrite: bool) -> None:
    """Whether ``build_lexical_index`` may write ``path`` (``retriever.storage.artifacts.check_target``)."""
    check_target(path, ("lexical.json", KIND), overwrite)


def lexical_path_for(index_path: str | os.PathLike) -> Path:
    """Where ``routerretriever index --output DIR`` puts the lexical index: ``DIR-bm25`` beside it."""
    index_path = Path(os.path.abspath(index_path))  # "." or "a/.." name their directory
    return index_path.with_name(f"{index_path.name}-bm25")


def lexical_beside(index) -> Path | None:
    """The lexical index that belongs to a dense ``CorpusIndex``: ``DIR-bm25`` beside an ``--output`` index, or
    the cache entry of the same dataset (default settings) beside a cached one; None if there is none."""
    candidates = [lexical_path_for(index.path)]
    dataset = index.meta["source"].get("dataset")
    if isinstance(dataset, str) and index.path.parent.name == "indexes":
        candidates.append(lexical_index_path(index.path.parent.parent, dataset, LexicalConfig()))
    return next((path for path in candidates if (path / "lexical.json").is_file()), None)
