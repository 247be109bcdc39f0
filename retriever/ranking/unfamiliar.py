"""Queries the router does not recognise: whether to trust lexical (BM25) evidence for them, without labels.

A query unlike every domain the router was fitted on (below its novelty threshold) goes to the system
``auto:base`` (``retriever.ranking.systems.AUTO``): ``hybrid:base`` when the corpus's lexical side agrees with the
base model, or a third ranker judges it about as accurate; otherwise ``hybrid:base`` only for the queries the base
has no preference for (``undecided``), ``base`` for the rest. The evidence is the rankings themselves, no label:

- ``top_agreement`` of one query: how high each system ranks the other's top document, ``(1 / rank in BM25 of the
  base's first + 1 / rank in the base of BM25's first) / 2`` (ranks from 1; 0 where it is not in the other's
  top ``FUSION_DEPTH``). 1 when both put the same document first; about 0 when BM25's picks look arbitrary to the
  base model and the base's to BM25; none when BM25 matched no document (the query shares no term with the
  corpus: the hybrid then ranks as the base does, so it is no evidence either way).
- ``trusts_lexical`` of the queries one call sends to auto systems (one corpus; ``auto:base`` and any
  ``auto:<expert>`` together, ``retriever.ranking.systems.resolve``): the lexical side is trusted when their
  agreement, summed and divided by their number plus ``PRIOR_QUERIES``, reaches ``MIN_AGREEMENT``. The base model
  is the product's guarantee, so lexical evidence must first show that it agrees with it, and a handful of queries
  is not enough evidence (one query alone never switches the corpus to the hybrid).
- ``lexical_ratio`` of those queries: a third ranker's estimate of BM25's accuracy over the base's
  (``retriever.ranking.third_opinion``): its agreement with BM25 summed, over its agreement with the base summed
  plus ``PRIOR_QUERIES`` (queries on which it sides wholly with the base: a handful of queries cannot switch a
  corpus to the hybrid). The lexical side is also trusted when this reaches ``MIN_LEXICAL_RATIO``. Two rankers
  also disagree when a query has many equally good documents (each may put a different right one first: NFCorpus,
  about 40 relevant documents a query, agrees 0.37 with a BM25 as good as its base), and the third ranker tells
  that apart from a wrong BM25. Where it shares BM25's mistakes its estimate runs high (up to 1.44 times the true
  ratio on the shared datasets' training queries: Perspectrum), and the hybrid starts to lose where BM25 scores
  below 0.66 of the base (the stressed BM25s), so the threshold is their product (DESIGN.md;
  ``benchmarks/probe_third_opinion.py``).
- ``base_gap`` of one query: the base's top-1 cosine score minus its ``DECISIVE_RANK``-th. ``undecided`` below
  ``UNDECIDED_GAP``: the base's top ten are nearly tied, so it prefers none of them, and fusing an untrusted BM25
  can only reorder near-equals or add a document BM25 ranks high (little to lose, recall to gain); where the base is
  decided, a BM25 that disagrees would override it, which only agreement licenses.

Why agreement: fusion adds BM25's documents to the base's ranking; where BM25 finds the documents the base finds
(and more), fusing adds recall; where BM25 ranks documents the base model does not, one of the two is wrong for
most queries, and on a corpus nobody has judged the base is the one the product stands behind. Measured on the
shared datasets' training queries and on stress tests where BM25 is made confidently wrong (DESIGN.md, "Queries
the router does not recognise"; ``benchmarks/probe_lexical_trust.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice

__all__ = ["DECISIVE_RANK", "MIN_AGREEMENT", "MIN_LEXICAL_RATIO", "PRIOR_QUERIES", "UNDECIDED_GAP", "base_gap",
           "could_vouch", "lexical_ratio", "lexical_trust", "top_agreement", "trusts_lexical", "undecided"]

MIN_AGREEMENT = 0.4  # mean top agreement from which BM25 is trusted on an unfamiliar corpus
MIN_LEXICAL_RATIO = 0.94  # or: a third ranker estimates BM25 this accurate next to the base (0.656 x 1.436)
PRIOR_QUERIES = 10  # queries' worth of evidence a call must add before its corpus's lexical side is trusted
DECISIVE_RANK = 10  # the base's top-1 score is compared with its score at this rank
UNDECIDED_GAP = 0.07  # base cosine gap (top 1 - top 10) below which a query is fused though BM25 is not trusted


def top_agreement(dense: Mapping[str, float], lexical: Mapping[str, float]) -> float | None:
    """One query's agreement of its base ranking ``dense`` and BM25 ranking ``lexical`` (``{doc id: score}``,
    best first) at the top, in [0, 1]; None when BM25 matched nothing (no evidence either way: the hybrid then
    ranks as the base does), 0 when the base found nothing."""
    if not lexical:
        return None
    if not dense:
        return 0.0
    dense_first, lexical_first = next(iter(dense)), next(iter(lexical))
    return (_reciprocal_rank(lexical, dense_first) + _reciprocal_rank(dense, lexical_first)) / 2


def _reciprocal_rank(ranking: Mapping[str, float], doc: str) -> float:
    for rank, other in enumerate(ranking, start=1):
        if other == doc:
            return 1.0 / rank
    return 0.0


def trusts_lexical(agreements: Iterable[float | None], ratio: float | None = None) -> bool:
    """Whether the unfamiliar queries of one call, with these ``top_agreement`` values and this ``lexical_ratio``
    (None: no third opinion), trust BM25 (see above); queries BM25 matched nothing for (None) do not count."""
    values = [a for a in agreements if a is not None]
    agreed = sum(values) / (len(values) + PRIOR_QUERIES) >= MIN_AGREEMENT
    return agreed or (ratio is not None and ratio >= MIN_LEXICAL_RATIO)


def lexical_trust(agreements: Sequence[float | None],
                  pairs: Callable[[], Iterable[tuple[float, float] | None] | None]) -> bool:
    """``trusts_lexical`` of one call's unfamiliar queries, asking for the third ranker's ``lexical_ratio`` pairs
    (``pairs()``; None: no third opinion) only where they can change the answer: agreement has not already trusted
    BM25 and ``could_vouch``. Search and router calibration both decide this way."""
    if trusts_lexical(agreements) or not could_vouch(agreements):
        return trusts_lexical(agreements)
    found = pairs()
    return trusts_lexical(agreements, None if found is None else lexical_ratio(found))


def could_vouch(agreements: Iterable[float | None]) -> bool:
    """Whether enough of these queries count (BM25 matched something) for ``lexical_ratio`` to reach
    ``MIN_LEXICAL_RATIO``: with its prior it is at most their number over ``PRIOR_QUERIES`` (so a call of a few
    queries, a single interactive search, never consults the third ranker)."""
    return sum(a is not None for a in agreements) / PRIOR_QUERIES >= MIN_LEXICAL_RATIO


def lexical_ratio(pairs: Iterable[tuple[float, float] | None], prior: float = PRIOR_QUERIES) -> float:
    """A third ranker's estimate of BM25's accuracy over the base's on one call's unfamiliar queries: per query
    ``(top_agreement(base, third), top_agreement(third, BM25))``, None where BM25 matched nothing (no evidence);
    the second summed over the first summed plus ``prior``: ``PRIOR_QUERIES`` queries on which the third ranker
    sides wholly with the base (a handful of queries is not enough evidence; ``prior=0``: the plain estimate)."""
    values = [p for p in pairs if p is not None]
    with_base = sum(a for a, _ in values) + prior
    return sum(b for _, b in values) / with_base if with_base else 0.0


def base_gap(dense: Mapping[str, float]) -> float | None:
    """How decided the base is on one query: its top-1 score minus its ``DECISIVE_RANK``-th (its last, with fewer
    documents); None when it found nothing."""
    scores = list(islice(dense.values(), DECISIVE_RANK))
    return float(scores[0] - scores[-1]) if scores else None


def undecided(gap: float | None) -> bool:
    """Whether a query with this ``base_gap`` is fused with an untrusted BM25: the base's top ten are nearly tied."""
    return gap is not None and gap < UNDECIDED_GAP
