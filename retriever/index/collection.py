"""Your own documents as a corpus: one collection file, JSONL, CSV, TSV or Parquet, plain or gzipped.

``open_collection(path)`` checks the file and its format up front; ``Collection.corpus()`` streams ``Document``s,
validating each row as it goes (an index build reads it twice: the first pass reports a bad row before any
encoding). Fields: ``id_field`` (BEIR's ``_id`` by default), ``title_field`` (optional in the file: ``title``),
``text_field`` (``text``); every other field of a row is the document's ``metadata``. Every error is one line
naming the file and the line (text formats) or row (Parquet).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retriever.index.base import Document
from retriever.storage.files import parse_json

__all__ = ["FORMATS", "Collection", "CollectionError", "open_collection"]

FORMATS = ("jsonl", "csv", "tsv", "parquet")
CSV_FIELD_LIMIT = 2**31 - 1  # the largest the csv module takes on every platform: a document is one field
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
             ".parquet": "parquet", ".pq": "parquet"}
PARQUET_BATCH = 4096  # rows per record batch read from a Parquet file


class CollectionError(ValueError):
    """A collection file is missing or malformed; the message names the file and the line or row."""


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    found = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise CollectionError(f"{path}: cannot tell the format from the name; name it *.jsonl, *.csv, *.tsv or "
                              "*.parquet (optionally .gz), or give the format (--format)")
    return found


def _metadata_value(value: Any) -> Any:
    """A field value as JSON keeps it (Parquet dates, decimals and bytes become text; NaN becomes null)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_metadata_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _metadata_value(v) for k, v in value.items()}
    return str(value)


@dataclass(frozen=True)
class Collection:
    """A collection file as a corpus source (``retriever.index.base.CorpusSource``): ``name`` (the file name
    without its extensions), ``corpus_path``, ``corpus()``."""

    corpus_path: Path
    format: str
    id_field: str = "_id"
    title_field: str = "title"
    text_field: str = "text"

    @property
    def name(self) -> str:
        return self.corpus_path.name.split(".")[0] or "collection"

    def corpus(self) -> Iterator[Document]:
        seen: dict[str, str] = {}
        rows = self._parquet_rows() if self.format == "parquet" else self._text_rows()
        count = 0
        for where, record in rows:
            doc = self._document(where, record)
            if doc.id in seen:
                raise CollectionError(f"{where}: duplicate document id {doc.id!r} (first at {seen[doc.id]})")
            seen[doc.id] = where.removeprefix(str(self.corpus_path)).lstrip(": ")
            if seen[doc.id].isdigit():
                seen[doc.id] = f"line {seen[doc.id]}"
            count += 1
            yield doc
        if count == 0:
            raise CollectionError(f"{self.corpus_path}: no documents")

    def _document(self, where: str, record: dict) -> Document:
        doc_id = record.get(self.id_field)
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id.strip():
            raise CollectionError(f"{where}: missing or empty id field {self.id_field!r} (got {doc_id!r})"[:300])
        text = record.get(self.text_field)
        if not isinstance(text, str) or not text.strip():
            raise CollectionError(f"{where}: document {doc_id!r} has no text in field {self.text_field!r} "
                                  f"(got {text!r})"[:300])
        title = record.get(self.title_field) or ""
        if not isinstance(title, str):
            raise CollectionError(f"{where}: document {doc_id!r}: field {self.title_field!r} must be text, got "
                                  f"{title!r}"[:300])
        own = {self.id_field, self.text_field, self.title_field}
        metadata = {key: _metadata_value(value) for key, value in record.items() if key not in own}
        return Document(doc_id, title, text, metadata)

    def _lines(self, read: list[int]) -> Iterator[str]:
        """The file's lines, each decoded on its own so that a bad byte is reported at its own line (``read[0]``:
        the lines read so far)."""
        opener = gzip.open if self.corpus_path.suffix.lower() == ".gz" else open
        with opener(self.corpus_path, "rb") as handle:
            for raw in handle:
                read[0] += 1
                try:  # -sig: a leading BOM (Excel) is no part of the first field's name
                    yield raw.decode("utf-8-sig" if read[0] == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise CollectionError(f"{self.corpus_path}:{read[0]}: not UTF-8 text ({err.reason})") from None

    def _text_rows(self) -> Iterator[tuple[str, dict]]:
        path, read = self.corpus_path, [0]
        try:
            with contextlib.closing(self._lines(read)) as lines:
                if self.format == "jsonl":
                    for text in lines:
                        if text.strip():
                            yield f"{path}:{read[0]}", self._json_row(f"{path}:{read[0]}", text)
                    return
                csv.field_size_limit(CSV_FIELD_LIMIT)  # the module's default (128 KiB) refuses long documents
                reader = csv.DictReader(lines, delimiter="\t" if self.format == "tsv" else ",")
                missing = [f for f in (self.id_field, self.text_field) if f not in (reader.fieldnames or [])]
                if missing:
                    raise CollectionError(f"{path}:1: no column {missing[0]!r} in the header (columns: "
                                          f"{', '.join(reader.fieldnames or []) or 'none'})"[:300])
                for record in reader:
                    if None in record:
                        raise CollectionError(f"{path}:{read[0]}: more fields than the header's "
                                              f"{len(reader.fieldnames)}")
                    yield f"{path}:{read[0]}", record
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise CollectionError(f"{path}: truncated or corrupt gzip file after line {read[0]} ({err})") from None
        except csv.Error as err:
            raise CollectionError(f"{path}:{read[0]}: malformed {self.format.upper()} ({err})") from None

    @staticmethod
    def _json_row(where: str, text: str) -> dict:
        try:
            record = parse_json(text)
        except json.JSONDecodeError as err:
            raise CollectionError(f"{where}: malformed JSON ({err.msg})") from None
        except ValueError as err:  # NaN, Infinity (parse_json)
            raise CollectionError(f"{where}: {err}") from None
        if not isinstance(record, dict):
            raise CollectionError(f"{where}: expected a JSON object, got {type(record).__name__}")
        return record

    def _parquet_rows(self) -> Iterator[tuple[str, dict]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.corpus_path)
        except (pa.ArrowException, OSError) as err:
            raise CollectionError(f"{self.corpus_path}: not a readable Parquet file ({err})") from None
        columns = parquet.schema_arrow.names
        missing = [f for f in (self.id_field, self.text_field) if f not in columns]
        if missing:
            raise CollectionError(f"{self.corpus_path}: no column {missing[0]!r} (columns: {', '.join(columns)})")
        row = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                row += 1
                yield f"{self.corpus_path}: row {row}", record


def open_collection(path: str | os.PathLike, *, id_field: str = "_id", title_field: str = "title",
                    text_field: str = "text", format: str | None = None) -> Collection:
    """The collection in file ``path``: the file must exist and its format be known (from the name, or
    ``format``: one of ``FORMATS``); rows are checked as ``corpus()`` reads them."""
    path = Path(path)
    if not path.is_file():
        raise CollectionError(f"no collection file at {path}" + (" (a directory: give the file)" if path.is_dir()
                                                                  else ""))
    if format is not None and format not in FORMATS:
        raise CollectionError(f"unknown collection format {format!r}; valid: {', '.join(FORMATS)}")
    for name, value in (("id_field", id_field), ("text_field", text_field), ("title_field", title_field)):
        if not isinstance(value, str) or not value:
            raise CollectionError(f"{name} must be a field name, got {value!r}")
    if id_field == text_field:
        raise CollectionError(f"id_field and text_field are both {id_field!r}")
    format = format or _format_of(path)
    if format == "parquet" and path.suffix.lower() == ".gz":
        raise CollectionError(f"{path}: a gzipped Parquet file cannot be read in batches; give the .parquet file "
                              "(Parquet compresses its own columns)")
    return Collection(path, format, id_field, title_field, text_field)
