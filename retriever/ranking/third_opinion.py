"""A third ranker's opinion, to tell on an unfamiliar corpus whether BM25 or the base model is the one that is wrong.

Where BM25 and the base disagree about a query's top document, two rankers alone cannot say which is right. A third
can (agreement-based accuracy estimation): if the three err independently, the chance that two of them put the
same document first grows with the product of their accuracies, so the third ranker's agreement with BM25 over its
agreement with the base estimates BM25's accuracy over the base's, whatever the third ranker's own accuracy
(``retriever.ranking.unfamiliar.lexical_ratio``).

The third ranker here is the mean of the base model's *input* token embeddings (no transformer pass): it needs no
other model, costs a tokenisation, and sits between the two it judges, neither exact term matching nor the
contextual model. It ranks only the documents either system returned for a query (their text from the index's
document store), which on the shared datasets' training queries gave the same estimate as ranking the whole
corpus (docs/probe-log.md §23; the adopted numbers: ``benchmarks/probe_third_opinion.py``). An index built
without its documents' text has no third opinion.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from threading import Lock
from weakref import WeakKeyDictionary

import numpy as np

from retriever.index.base import Document
from retriever.ranking.topk import Results

__all__ = ["THIRD_VERSION", "ThirdOpinion", "TokenEmbeddingRanker", "third_opinion"]

THIRD_VERSION = 1  # raised whenever the third ranker changes, so cached opinions of it are recomputed
CACHED_DOCUMENTS = 50_000  # document vectors a ranker keeps across calls (about 90 MB at 384 dimensions)


class TokenEmbeddingRanker:
    """Texts as the mean of a sentence-transformers model's input token embeddings (special tokens left out,
    truncated as the model truncates); ranked by cosine after the mean of the documents ranked is taken away (such
    means share one large common direction, which would otherwise dominate every cosine). The vectors of the last
    ``CACHED_DOCUMENTS`` document texts are kept (keyed by the text's digest): a service's calls over one corpus
    tokenise each document once (tokenising is most of the third opinion's cost, BENCHMARKS.md §7)."""

    def __init__(self, model):
        self.tokenizer = model.tokenizer
        self.table = model[0].auto_model.get_input_embeddings().weight.detach().float().cpu().numpy()
        self.special = set(self.tokenizer.all_special_ids)
        self.max_length = int(model.get_max_seq_length() or 512)
        self._documents: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One mean token embedding per text (zeros for a text with no token)."""
        tokens = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                                add_special_tokens=False)["input_ids"] if texts else []
        vectors = np.zeros((len(tokens), self.table.shape[1]), dtype=np.float32)
        for row, ids in enumerate(tokens):
            ids = [t for t in ids if t not in self.special]
            if ids:
                vectors[row] = self.table[ids].mean(axis=0)
        return vectors

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``embed`` of document texts, each tokenised once while it stays among the last ``CACHED_DOCUMENTS``."""
        keys = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        with self._lock:  # the vectors kept are read here, so another call's eviction cannot take them away
            found = {k: self._documents[k] for k in keys if k in self._documents}
            for key in found:
                self._documents.move_to_end(key)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        # each row its own array: a kept row must not pin the whole batch it was embedded in
        new = {k: row.copy() for k, row in zip(missing, self.embed(list(missing.values())), strict=True)}
        with self._lock:
            self._documents.update(new)
            while len(self._documents) > CACHED_DOCUMENTS:
                self._documents.popitem(last=False)
        found.update(new)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, self.table.shape[1]), np.float32)

    def rank(self, queries: Mapping[str, str], candidates: Mapping[str, Iterable[str]],
             documents: Mapping[str, str]) -> Results:
        """``{query id: {doc id: score}}``, best first: each query's ``candidates`` that ``documents`` has text for."""
        doc_ids = list(documents)
        row = {doc: i for i, doc in enumerate(doc_ids)}
        doc_vectors = self.embed_documents([documents[d] for d in doc_ids])
        query_ids = list(candidates)
        query_vectors = self.embed([queries[q] for q in query_ids])
        if len(doc_ids):
            centre = doc_vectors.mean(axis=0)
            doc_vectors, query_vectors = _unit(doc_vectors - centre), _unit(query_vectors - centre)
        results: Results = {}
        for vector, q in zip(query_vectors, query_ids, strict=True):
            docs = [d for d in dict.fromkeys(candidates[q]) if d in row]
            scores = doc_vectors[[row[d] for d in docs]] @ vector if docs else np.zeros(0)
            order = np.argsort(-scores, kind="stable")
            results[q] = {docs[i]: float(scores[i]) for i in order}
        return results


class ThirdOpinion:
    """The third ranker over one index for one call's queries: called with each query's candidate documents, returns
    their ranking, or None when the index holds no document text."""

    def __init__(self, ranker: TokenEmbeddingRanker, index, queries: Mapping[str, str]):
        self.ranker, self.index, self.queries = ranker, index, queries

    def __call__(self, candidates: Mapping[str, Iterable[str]]) -> Results | None:
        candidates = {q: list(docs) for q, docs in candidates.items()}
        wanted = list(dict.fromkeys(d for docs in candidates.values() for d in docs))
        stored = self.index.documents(wanted) if wanted else {}
        if wanted and not stored:
            return None
        texts = {d: Document(d, doc["title"], doc["text"]).content() for d, doc in stored.items()}  # as embedded
        return self.ranker.rank(self.queries, candidates, texts)


_RANKERS: WeakKeyDictionary = WeakKeyDictionary()  # one TokenEmbeddingRanker per base model, made on first use


def third_opinion(model, index, queries: Mapping[str, str]) -> ThirdOpinion:
    """The third opinion of the base ``model`` (a sentence-transformers model) over ``index`` for ``queries``
    (``{query id: text}``): search, evaluation and router calibration all consult it this way."""
    if model not in _RANKERS:
        _RANKERS[model] = TokenEmbeddingRanker(model)
    return ThirdOpinion(_RANKERS[model], index, queries)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
