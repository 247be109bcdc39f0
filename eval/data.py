"""BEIR-layout datasets: typed, validated loading of corpus, queries and qrels.

Layout (as read by BEIR's ``GenericDataLoader``, plus gzipped corpora)::

    <data_dir>/<name>/corpus.jsonl[.gz]   {"_id", "title", "text"}
    <data_dir>/<name>/queries.jsonl       {"_id", "text"}
    <data_dir>/<name>/qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score   (header line, LF or CRLF)
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from retriever.index.base import Document
from retriever.storage.files import parse_json, safe_name

__all__ = [
    "DATA_DIR_ENV",
    "DataError",
    "Dataset",
    "Document",
    "Split",
    "SplitFiles",
    "check_judged_docs",
    "iter_corpus",
    "load_qrels",
    "load_queries",
    "load_query_file",
    "load_split",
    "merge_queries",
    "open_dataset",
    "resolve_data_dir",
]

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ROUTERRETRIEVER_DATA_DIR"

Qrels = dict[str, dict[str, int]]
SCORE_RANGE = (-(2**31), 2**31 - 1)  # what pytrec_eval holds (it wraps larger scores around, or fails)
_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits (int() also reads "1_0" and other scripts' digits)


class DataError(ValueError):
    """A dataset is missing or malformed; the message names the file, line and offending value."""


@dataclass(frozen=True)
class Split:
    """One evaluation split: the queries that have judgments, and their graded qrels."""

    name: str
    queries: dict[str, str]
    qrels: Qrels


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 text file, plain or gzipped. Bytes that are not UTF-8, a truncated or
    corrupt gzip stream, or an unreadable file are a DataError naming the file and line."""
    line_no = 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    yield line_no, raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}:{line_no}: not UTF-8 text (byte {raw[err.start:err.start + 1]!r} at "
                                    f"column {err.start + 1})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: truncated or corrupt gzip file after line {line_no} ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror or err}") from None


def _iter_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = parse_json(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{line_no}: malformed JSON ({err.msg})") from None
        except ValueError as err:  # NaN, Infinity, 1e999 (parse_json)
            raise DataError(f"{path}:{line_no}: {err}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
        for key in required:
            value = record.get(key)
            if not isinstance(value, str) or (key == "_id" and not value):
                raise DataError(f"{path}:{line_no}: missing or non-string {key!r} (got {value!r})"[:300])
        yield line_no, record


def iter_corpus(path: str | os.PathLike) -> Iterator[Document]:
    """Stream documents from ``corpus.jsonl`` or ``corpus.jsonl.gz``, validating as it goes."""
    path = Path(path)
    seen: set[str] = set()
    for line_no, record in _iter_jsonl(path, ("_id", "text")):
        doc_id = record["_id"]
        if doc_id in seen:
            raise DataError(f"{path}:{line_no}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        title = record.get("title") or ""
        if not isinstance(title, str):
            raise DataError(f"{path}:{line_no}: 'title' must be a string (got {title!r})")
        yield Document(doc_id, title, record["text"])
    if not seen:
        raise DataError(f"{path}: empty corpus (no documents)")


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    queries: dict[str, str] = {}
    for line_no, record in _iter_jsonl(path, ("_id", "text")):
        if record["_id"] in queries:
            raise DataError(f"{path}:{line_no}: duplicate query id {record['_id']!r}")
        queries[record["_id"]] = record["text"]
    if not queries:
        raise DataError(f"{path}: no queries")
    return queries


def load_query_file(path: str | os.PathLike, first: int = 1) -> dict[str, str]:
    """Queries to search for: a BEIR ``queries.jsonl`` (its ids), or plain text with one query per line, numbered
    ``q<first>``, ``q<first+1>``, ... (blank lines skipped)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return load_queries(path)
    texts = [line.strip() for _, line in _lines(path) if line.strip()]
    if not texts:
        raise DataError(f"{path}: no queries (every line is empty)")
    return {f"q{i}": text for i, text in enumerate(texts, start=first)}


def merge_queries(texts: Sequence[str], path: str | os.PathLike | None = None) -> dict[str, str]:
    """Queries given one by one (``q1``, ``q2``, ...) and from a query file (``load_query_file``: its plain-text
    lines numbered on after them), refusing a ``.jsonl`` id that one of the first already has, or no query."""
    queries = {f"q{i}": text for i, text in enumerate(texts, start=1)}
    if path is not None:
        for query_id, text in load_query_file(path, first=len(queries) + 1).items():
            if query_id in queries:
                raise DataError(f"query id {query_id!r} in {path} is also the id of a --query")
            queries[query_id] = text
    if not queries:
        raise DataError("no queries: give at least one --query or a --queries file")
    return queries


def load_qrels(path: str | os.PathLike) -> Qrels:
    """Read a BEIR qrels TSV (header line; LF or CRLF; integer graded scores in ``SCORE_RANGE``)."""
    path = Path(path)
    qrels: Qrels = {}
    for line_no, line in _lines(path):
        row = [cell.strip() for cell in line.rstrip("\r\n").split("\t")]
        if row == [""]:
            continue
        if line_no == 1 and row[0] == "query-id":
            continue
        if len(row) != 3:
            raise DataError(f"{path}:{line_no}: expected 3 tab-separated columns, got {len(row)}: {row!r}"[:300])
        query_id, doc_id, score = row
        if not query_id or not doc_id:
            raise DataError(f"{path}:{line_no}: empty query or document id: {row!r}")
        if not _INTEGER.fullmatch(score) or not SCORE_RANGE[0] <= int(score) <= SCORE_RANGE[1]:
            raise DataError(f"{path}:{line_no}: score must be an integer in [{SCORE_RANGE[0]}, {SCORE_RANGE[1]}], "
                            f"got {score!r}"[:300])
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    return qrels


def load_split(queries_path: str | os.PathLike, qrels_path: str | os.PathLike, split: str = "test") -> Split:
    """A split from a queries JSONL and a qrels TSV of the user's own (no BEIR folder): the judged queries, in
    qrels order, as ``Dataset.split`` gives them. Unlike a BEIR dataset's, nothing is dropped: a qrels query id
    that the queries file lacks is a DataError naming the first one (``check_judged_docs`` checks documents)."""
    queries = load_queries(queries_path)
    qrels = load_qrels(qrels_path)
    if not qrels:
        raise DataError(f"{qrels_path}: no judgments")
    missing = [query_id for query_id in qrels if query_id not in queries]
    if missing:
        line_no = next(n for n, line in _lines(Path(qrels_path)) if line.split("\t", 1)[0].strip() == missing[0])
        raise DataError(f"{qrels_path}:{line_no}: query id {missing[0]!r} is not in {queries_path} ({len(missing)} "
                        f"judged query id(s) missing)"[:300])
    return Split(split, {query_id: queries[query_id] for query_id in qrels}, qrels)


def check_judged_docs(qrels: Qrels, doc_ids, qrels_path: str | os.PathLike, where: str) -> None:
    """A DataError naming the first document ``qrels`` judges that ``doc_ids`` (an index's) lacks, and how many
    such documents there are: scores against an index that misses judged documents would mislead."""
    known = set(doc_ids)
    missing = list(dict.fromkeys(d for judged in qrels.values() for d in judged if d not in known))
    if missing:
        raise DataError(f"{qrels_path}: {len(missing)} judged document(s) are not in {where}, the first "
                        f"{missing[0]!r}"[:300])


@dataclass(frozen=True)
class SplitFiles:
    """A split read by ``load_split``, named as a dataset is in results: what ``eval.runs.SplitRun`` takes in
    place of a ``Dataset`` when queries and qrels come as plain files (``evaluate --index``)."""

    name: str
    data: Split

    def split(self, split: str) -> Split:
        if split != self.data.name:
            raise DataError(f"{self.name}: split {split!r} asked for, but its files were read as {self.data.name!r}")
        return self.data


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory given, else ``$ROUTERRETRIEVER_DATA_DIR``; an error if neither exists."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
        if not data_dir:
            raise DataError(f"no data directory: pass --data-dir or set {DATA_DIR_ENV}")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist")
    return path


@dataclass
class Dataset:
    """A BEIR-layout dataset on disk. Files are read on demand; the corpus is streamed."""

    name: str
    root: Path
    corpus_path: Path
    queries_path: Path
    qrels_paths: dict[str, Path]
    _doc_ids: frozenset[str] | None = field(default=None, repr=False)

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels_paths)

    def corpus(self) -> Iterator[Document]:
        return iter_corpus(self.corpus_path)

    def doc_ids(self) -> frozenset[str]:
        if self._doc_ids is None:
            self._doc_ids = frozenset(doc.id for doc in self.corpus())
        return self._doc_ids

    def queries(self) -> dict[str, str]:
        return load_queries(self.queries_path)

    def qrels(self, split: str) -> Qrels:
        if split not in self.qrels_paths:
            raise DataError(
                f"unknown split {split!r} for dataset {self.name!r}; available: {', '.join(self.splits)}"
            )
        return load_qrels(self.qrels_paths[split])

    def split(self, split: str) -> Split:
        """Queries of ``split`` with their qrels; judgments naming unknown ids are dropped with one warning."""
        raw = self.qrels(split)
        queries = self.queries()
        doc_ids = self.doc_ids()
        qrels: Qrels = {}
        dropped = 0
        for query_id, judged in raw.items():
            if query_id not in queries:
                dropped += len(judged)
                continue
            kept = {doc_id: score for doc_id, score in judged.items() if doc_id in doc_ids}
            dropped += len(judged) - len(kept)
            if kept:
                qrels[query_id] = kept
        if dropped:
            logger.warning(
                "%s/%s: dropped %d judgment(s) that reference unknown query or document ids",
                self.name, split, dropped,
            )
        if not qrels:
            raise DataError(f"{self.qrels_paths[split]}: no usable judgments for split {split!r}")
        return Split(split, {qid: queries[qid] for qid in qrels}, qrels)


def open_dataset(data_dir: str | os.PathLike | None, name: str, judged: bool = True) -> Dataset:
    """Locate dataset ``name`` under the data directory and check that its files exist (``judged=False``: only
    the corpus is needed, as for an expert trained without judgments)."""
    data_dir = resolve_data_dir(data_dir)
    try:
        root = data_dir / safe_name(name, "dataset")
    except ValueError as err:  # a path given as a name: say how to reach a dataset elsewhere
        raise DataError(f"{err}; for a dataset in another folder, pass that folder as --data-dir") from None
    if not root.is_dir():
        available = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and (p / "queries.jsonl").exists())
        raise DataError(
            f"dataset {name!r} not found: looked for {root}; available in {data_dir}: "
            f"{', '.join(available) or 'none'}"
        )
    corpus_path = next((root / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (root / n).is_file()), None)
    if corpus_path is None:
        raise DataError(f"dataset {name!r}: missing corpus file {root / 'corpus.jsonl'} (or .jsonl.gz)")
    queries_path = root / "queries.jsonl"
    if not queries_path.is_file() and judged:
        raise DataError(f"dataset {name!r}: missing queries file {queries_path}")
    qrels_dir = root / "qrels"
    qrels_paths = {p.stem: p for p in sorted(qrels_dir.glob("*.tsv"))} if qrels_dir.is_dir() else {}
    if not qrels_paths and judged:
        raise DataError(f"dataset {name!r}: no qrels files in {qrels_dir}")
    return Dataset(name, root, corpus_path, queries_path, qrels_paths)
