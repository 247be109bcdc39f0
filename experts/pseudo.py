"""Training data without relevance judgments (issue #27): pseudo-labelled splits an expert trains on as it would
on qrels, so training and its held-out selection run unchanged; ``corpus_split`` sets documents aside for the
self-check (``experts.workflows.unlabelled``).

Two sources:

- ``corpus_queries``: pseudo-queries drawn from the documents themselves, inverse-cloze style: one sentence of a
  sampled document (a document with no sentence of ``SENTENCE_WORDS`` words gives its title, else nothing),
  labelled with that document. ``routing_queries`` draws the same way from the other end of the seeded order, so the
  queries a router is fitted on are not those an expert of the same seed trained on (while the corpus has documents
  enough for both).
- ``agreed_queries``: unjudged queries (a file, or a dataset's split with its qrels set aside), each labelled with
  the first document of ``hybrid:base``, the base fused with BM25: what the two systems the product has without
  any training agree to rank first. A query BM25 matches nothing for is left out by the caller (its label would be
  the base's own first document, nothing to learn).
- ``corrected_queries``: the same, keeping only the queries where that first document is not the base's own
  first: where BM25 changed the base's mind. A label the base already ranks first teaches nothing (and makes the
  held-out slice the base's to win), so these are the queries an expert can learn from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eval.data import Dataset, Split
from retriever.ranking.systems import FUSION_DEPTH, fuse
from retriever.ranking.topk import search, search_lexical

__all__ = ["SENTENCE_WORDS", "PseudoLabelled", "agreed_queries", "corpus_queries", "corpus_split", "corrected_queries",
           "fused_rankings", "routing_queries", "sentences"]

SENTENCE_WORDS = (6, 40)  # a pseudo-query sentence's length in words, inclusive
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PseudoLabelled:
    """A dataset whose one split's judgments are pseudo-labels: ``split(name)`` gives them, ``corpus()`` and
    ``doc_ids()`` are the dataset's own (what ``experts.train`` reads)."""

    source: Dataset
    data: Split

    @property
    def name(self) -> str:
        return self.source.name

    def split(self, split: str) -> Split:
        if split != self.data.name:
            raise ValueError(f"{self.name}: pseudo-labels are for split {self.data.name!r}, not {split!r}")
        return self.data

    def corpus(self):
        return self.source.corpus()

    def doc_ids(self):
        return self.source.doc_ids()


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` whose length in words lies in ``SENTENCE_WORDS``."""
    low, high = SENTENCE_WORDS
    return [s.strip() for s in _SENTENCE_END.split(text) if low <= len(s.split()) <= high]


def corpus_queries(dataset: Dataset, count: int, seed: int = 0, split: str = "train",
                   from_end: bool = False) -> PseudoLabelled:
    """Up to ``count`` pseudo-queries from ``dataset``'s documents (seeded): one sentence of each sampled document,
    labelled with it; query ids ``pseudo:<doc id>``. ``from_end``: documents taken from the other end of the seeded
    order (``routing_queries``)."""
    docs = list(dataset.corpus())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    queries, qrels = {}, {}
    for row in order[::-1] if from_end else order:
        doc = docs[int(row)]
        title_fits = SENTENCE_WORDS[0] <= len(doc.title.split()) <= SENTENCE_WORDS[1]
        options = sentences(doc.text) or ([doc.title] if title_fits else [])
        if not options:
            continue
        query_id = f"pseudo:{doc.id}"
        queries[query_id] = options[int(rng.integers(len(options)))]
        qrels[query_id] = {doc.id: 1}
        if len(queries) >= count:
            break
    if len(queries) < 2:
        raise ValueError(f"{dataset.name}: {len(queries)} document(s) have a sentence of {SENTENCE_WORDS[0]}-"
                         f"{SENTENCE_WORDS[1]} words; pseudo-queries need at least 2")
    return PseudoLabelled(dataset, Split(split, queries, qrels))


def corpus_split(dataset: Dataset, count: int, check: int, seed: int = 0) -> tuple[PseudoLabelled, PseudoLabelled]:
    """``(training, check)`` pseudo-queries from one seeded draw of ``count + check`` documents, none in both: the
    first ``count`` train (``corpus_queries(dataset, count, seed)``'s draw) and the next ``check`` check, where the
    corpus has documents for both. Where it has fewer, the check keeps ``check`` of them but never more than half
    (its remainder, if larger), and training the rest."""
    draw = corpus_queries(dataset, count + check, seed)
    ids = list(draw.data.queries)
    held = min(check, max(len(ids) - count, len(ids) // 2))
    if held < 2 or len(ids) - held < 2:
        raise ValueError(f"{dataset.name}: drew {len(ids)} pseudo-queries of the {count + check} asked (documents "
                         f"with a sentence of {SENTENCE_WORDS[0]}-{SENTENCE_WORDS[1]} words); training and its "
                         "self-check need at least 4")
    train, checked = ids[: min(count, len(ids) - held)], ids[len(ids) - held:]

    def part(chosen):
        return PseudoLabelled(dataset, Split(draw.data.name, {q: draw.data.queries[q] for q in chosen},
                                             {q: draw.data.qrels[q] for q in chosen}))

    return part(train), part(checked)


def routing_queries(dataset: Dataset, count: int, seed: int = 0) -> PseudoLabelled:
    """``corpus_queries`` for fitting routers on a dataset without judgments (``build-router --unlabelled``): drawn
    from the end of the seeded order, away from an unlabelled expert's training draw of the same seed."""
    return corpus_queries(dataset, count, seed, from_end=True)


def agreed_queries(dataset: Dataset, queries: Mapping[str, str], fused: Mapping[str, Mapping[str, float]],
                   split: str = "train") -> PseudoLabelled:
    """``queries`` (``{id: text}``, unjudged) labelled with the first document of their ``hybrid:base`` ranking
    ``fused`` (``{query id: {doc id: score}}``, best first); queries without one there are dropped."""
    qrels = {q: {next(iter(fused[q])): 1} for q in queries if fused.get(q)}
    if len(qrels) < 2:
        raise ValueError(f"{dataset.name}: {len(qrels)} of {len(queries)} queries have a fused first document; "
                         "an expert needs at least 2")
    return PseudoLabelled(dataset, Split(split, {q: queries[q] for q in qrels}, qrels))


def corrected_queries(dataset: Dataset, queries: Mapping[str, str], fused: Mapping[str, Mapping[str, float]],
                      dense: Mapping[str, Mapping[str, float]], split: str = "train") -> PseudoLabelled:
    """``agreed_queries`` of the queries whose fused first document is not their base (``dense``) first one."""
    changed = {q: hits for q, hits in fused.items()
               if hits and dense.get(q) and next(iter(hits)) != next(iter(dense[q]))}
    return agreed_queries(dataset, queries, changed, split)


def fused_rankings(queries: Mapping[str, str], index, encoder, lexical, weight: float) -> tuple[dict, dict]:
    """``(base rankings, hybrid:base rankings)`` of ``queries`` (``{id: text}``) over ``index`` and its BM25 index
    ``lexical``, the hybrid at dense weight ``weight``; queries BM25 matches nothing for have no hybrid ranking
    (what ``agreed_queries`` and ``corrected_queries`` label from)."""
    ids = list(queries)
    texts = [queries[q] for q in ids]
    dense = search(index, encoder.encode(texts), ids, k=FUSION_DEPTH)
    lexical_hits = search_lexical(lexical, texts, ids, FUSION_DEPTH)
    return dense, {q: fuse(dense[q], lexical_hits[q], weight) for q in ids if lexical_hits[q]}
