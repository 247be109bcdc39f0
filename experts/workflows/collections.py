"""``routerretriever add`` and ``delete``: change a named index (a directory ``index --output`` wrote, or a Milvus
collection) as one new version: only the new documents are encoded; dense index, BM25 and document store change
together. Cache entries are never changed (they follow their corpus file)."""

from __future__ import annotations

from typing import NamedTuple

from retriever.encoding.encoder import load_encoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.storage.cache import built_precision

__all__ = ["Changed", "add_documents", "delete_documents", "read_ids"]


class Changed(NamedTuple):
    dense: object  # the index's new version
    lexical: object | None  # its BM25 index (None: it has none)
    count: int  # documents added or deleted

    def lines(self, done: str) -> list[str]:
        """What ``add``/``delete`` print: the new version of each index changed."""
        lines = [f"{done} {self.count}\t{self.dense.path}\t{len(self.dense)} documents\tversion "
                 f"{self.dense.meta.get('version', 1)}"]
        return lines + ([] if self.lexical is None else [f"{self.lexical.path}\t{len(self.lexical)} documents\tbm25"])


def add_documents(index_dir, corpus, *, replace: bool = False, id_field: str = "_id", title_field: str = "title",
                  text_field: str = "text", format: str | None = None, backend: IndexBackend | None = None,
                  model: str | None = None, lexical: bool = True, progress: bool = False) -> Changed:
    """Add the documents of the file ``corpus`` (JSONL, CSV, TSV or Parquet, gz too: ``open_collection`` with these
    fields and ``format``; ``retriever.index.collection``) to ``index_dir``; ``model``: the base model
    (default: the one that built the index, in its precision). ``replace``: ids the index holds are replaced."""
    from retriever.index.collection import open_collection

    backend = backend or FaissBackend()
    docs = list(open_collection(corpus, id_field=id_field, title_field=title_field, text_field=text_field,
                                format=format).corpus())
    if not docs:
        raise ValueError(f"{corpus} holds no documents to add")
    meta = backend.open(index_dir).meta  # before the model loads: a missing index fails here
    encoder = load_encoder(model or meta["model"]["id"], precision=built_precision(meta))
    dense, bm25 = backend.add(index_dir, docs, encoder, replace=replace, lexical=lexical, progress=progress)
    return Changed(dense, bm25, len(docs))


def read_ids(ids=(), ids_file=None) -> list[str]:
    """``ids`` and those of ``ids_file`` (one per line; blank lines skipped), in order, each once."""
    listed = list(ids)
    if ids_file is not None:
        with open(ids_file, encoding="utf-8") as handle:
            listed += [line.strip() for line in handle if line.strip()]
    if not listed:
        raise ValueError("no document ids to delete: give --id ID (repeatable) or --ids-file FILE")
    return list(dict.fromkeys(listed))


def delete_documents(index_dir, ids=(), ids_file=None, *, backend: IndexBackend | None = None,
                     lexical: bool = True) -> Changed:
    """Delete the documents ``ids`` (and those listed in ``ids_file``) from ``index_dir``; an id it does not hold
    is an error naming it, and nothing is deleted."""
    doomed = read_ids(ids, ids_file)
    dense, bm25 = (backend or FaissBackend()).delete(index_dir, doomed, lexical=lexical)
    return Changed(dense, bm25, len(doomed))
