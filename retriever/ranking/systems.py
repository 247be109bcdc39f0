"""Systems: what answers a query over the shared corpus. A dense expert (``base`` or an expert's name), ``bm25``
(the lexical index), ``hybrid:<expert>`` (that expert's ranking fused with BM25's), or ``auto:<expert>``:
``hybrid:<expert>`` or ``<expert>``, as ``retriever.ranking.unfamiliar`` decides for the call's queries sent to
auto systems from their two rankings, without labels (``resolve``). Routers send queries they do not recognise to
``auto:base``, and the queries of a domain they were fitted on without judgments (pseudo-queries cannot tell what
BM25 adds) to ``auto:<its best dense system>``.

Routers choose among systems by these names; ``run_system`` is the one place a system's ranking is made from
the dense and lexical rankings it needs (``RouterRetriever`` and evaluation both call it), and ``FusionSettings``
holds each hybrid's fusion weight, calibrated on training queries and saved with the router directory.

Fusion (``fuse``): ``convex`` — each list's scores min-max normalised over its top-k, then
``w * dense + (1 - w) * bm25`` (a document missing from one list scores 0 there); ``rrf`` — reciprocal-rank
fusion, ``sum 1 / (60 + rank)``, which needs no weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice

from retriever.encoding.encoder import BASE
from retriever.ranking.unfamiliar import (
    base_gap,
    lexical_trust,
    top_agreement,
    trusts_lexical,
    undecided,
)

__all__ = [
    "AUTO", "AUTO_PREFIX", "BASE", "BM25", "FUSIONS", "FUSION_VERSION", "HYBRID", "FusionMethod", "FusionSettings",
    "SystemSet", "auto", "auto_systems", "dense_part", "fuse", "group_rows", "hybrid", "is_auto", "is_lexical",
    "resolve", "run_system", "system_names", "third_opinion_pairs",
]

BM25 = "bm25"
HYBRID = "hybrid:"
AUTO_PREFIX = "auto:"
AUTO = f"{AUTO_PREFIX}{BASE}"  # unfamiliar queries: hybrid:base where BM25 agrees with the base or it is undecided


class FusionMethod(StrEnum):
    """How a hybrid fuses the dense and the BM25 ranking (``fuse``)."""

    CONVEX = "convex"  # a weighted sum of min-max normalised scores
    RRF = "rrf"  # reciprocal rank fusion


FUSIONS = tuple(method.value for method in FusionMethod)
RRF_K = 60
# an uncalibrated hybrid's dense weight (no judged queries to calibrate on, as in `benchmark --unlabelled`): what
# calibration chose for hybrid:base on the seven expert datasets' training queries (BENCHMARKS.md §4b), the weight
# auto:base's thresholds were chosen with (0.5 before 2026-12-04)
DEFAULT_WEIGHT = 0.6
FUSION_DEPTH = 100  # each list's top-k that a hybrid fuses, whatever k the caller asks for
FUSION_VERSION = 1  # bumped when fusion changes, so cached hybrid scores are recomputed
TIE_STEP = 1e-6  # resolvable in float32, which pytrec_eval compares scores in

Results = dict[str, dict[str, float]]


def hybrid(expert: str) -> str:
    return f"{HYBRID}{expert}"


def auto(expert: str) -> str:
    return f"{AUTO_PREFIX}{expert}"


def is_auto(system: str) -> bool:
    return system.startswith(AUTO_PREFIX)


def dense_part(system: str) -> str | None:
    """The dense expert a system needs (``base`` for the base model), or None for ``bm25``."""
    if system == BM25:
        return None
    if is_auto(system):
        return system[len(AUTO_PREFIX):]
    return system[len(HYBRID):] if system.startswith(HYBRID) else system


def is_lexical(system: str) -> bool:
    """Whether the system needs the BM25 ranking."""
    return system == BM25 or is_auto(system) or system.startswith(HYBRID)


def system_names(experts: list[str], lexical: bool = True) -> list[str]:
    """Every system over ``experts`` (``base`` first): the dense ones, then ``bm25`` and each expert's hybrid."""
    return [*experts, *([BM25, *[hybrid(e) for e in experts]] if lexical else [])]


def _normalised(hits: Mapping[str, float]) -> dict[str, float]:
    if not hits:
        return {}
    low, high = min(hits.values()), max(hits.values())
    span = high - low
    return {doc: (score - low) / span if span > 0 else 1.0 for doc, score in hits.items()}


def fuse(dense: Mapping[str, float], lexical: Mapping[str, float], weight: float, method: str = "convex",
         k: int = FUSION_DEPTH) -> dict[str, float]:
    """One query's fused ranking of two ``{doc id: score}`` lists, best first, at most ``k`` documents."""
    if method == FusionMethod.CONVEX:
        d, s = _normalised(dense), _normalised(lexical)
        scores = {doc: weight * d.get(doc, 0.0) + (1 - weight) * s.get(doc, 0.0) for doc in {**d, **s}}
    elif method == FusionMethod.RRF:
        scores = {}
        for hits in (dense, lexical):
            for rank, doc in enumerate(sorted(hits, key=hits.__getitem__, reverse=True), start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (RRF_K + rank)
    else:
        raise ValueError(f"unknown fusion {method!r}; valid: {', '.join(FUSIONS)}")
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    # strictly decreasing, so that whoever re-sorts by score (pytrec_eval breaks ties the other way) keeps this
    # order: a tie loses TIE_STEP per place, far below any real difference of fused scores
    return {doc: score - place * TIE_STEP for place, (doc, score) in enumerate(best)}


@dataclass(frozen=True)
class FusionSettings:
    """How hybrids are fused: the method and each hybrid's dense weight (uncalibrated ones weigh ``DEFAULT_WEIGHT``)."""

    fusion: FusionMethod = FusionMethod.CONVEX
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.fusion, str) or self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; valid: {', '.join(FUSIONS)}")
        object.__setattr__(self, "fusion", FusionMethod(self.fusion))
        for name, weight in self.weights.items():
            if not name.startswith(HYBRID) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
                raise ValueError(f"hybrid weight {name!r}: {weight!r} (expected hybrid:<expert> and a weight in "
                                 "[0, 1])")

    def weight(self, system: str) -> float:
        return float(self.weights.get(system, DEFAULT_WEIGHT))

    def to_json(self) -> dict:
        return {"fusion": self.fusion, "weights": dict(sorted(self.weights.items()))}


SystemSet = FusionSettings  # its name before 0.2 (it holds fusion settings, not a set of systems)


def auto_systems(agreements: Iterable[float | None], gaps: Sequence[float | None], expert: str = BASE,
                 trusted: bool | None = None) -> list[str]:
    """What ``auto:<expert>`` is for each of the queries sent there together, from their ``top_agreement`` and
    ``base_gap`` values of ``expert``'s ranking (``retriever.ranking.unfamiliar``): ``hybrid:<expert>`` for all if
    the lexical side is trusted (``trusted``; by default, if these queries' agreement trusts it), else the hybrid
    for those the expert is undecided on and ``expert`` for the rest (and for a query BM25 matched nothing for,
    agreement None: the hybrid would rank as the expert does)."""
    agreements = list(agreements)
    if trusts_lexical(agreements) if trusted is None else trusted:
        return [hybrid(expert)] * len(gaps)
    return [hybrid(expert) if undecided(gap) and agreement is not None else expert
            for agreement, gap in zip(agreements, gaps, strict=True)]


def resolve(choice: Mapping[str, str], dense: Results | None, lexical: Results | None,
            third: Callable[[dict[str, list[str]]], Results | None] | None = None) -> dict[str, str]:
    """``{query id: system}`` with every ``auto:<expert>`` replaced by ``auto_systems`` of the queries sent to it,
    from their dense rankings (``dense``: each query's by its system's dense part) and BM25 (``lexical``) rankings,
    and ``third``, a third ranker's ranking of each query's documents from both
    (``retriever.ranking.third_opinion.ThirdOpinion``; None, or None returned: agreement alone decides).
    Whether the lexical side is trusted is decided once, over every query sent to any auto system: the call is
    over one corpus, and its BM25 is the same whichever dense expert a query goes to. Other systems stay."""
    resolved, queries = dict(choice), list(choice)
    groups = {system: [queries[i] for i in rows] for system, rows in group_rows(list(choice.values())).items()
              if is_auto(system)}
    agreements = {q: top_agreement(dense[q], lexical[q]) for ids in groups.values() for q in ids}
    trusted = lexical_trust(list(agreements.values()), lambda: third_opinion_pairs(agreements, dense, lexical, third))
    for system, ids in groups.items():
        decided = auto_systems([agreements[q] for q in ids], [base_gap(dense[q]) for q in ids], dense_part(system),
                               trusted)
        resolved.update(zip(ids, decided, strict=True))
    return resolved


def third_opinion_pairs(agreements: Mapping[str, float | None], dense: Results, lexical: Results,
                        third: Callable[[dict[str, list[str]]], Results | None] | None
                        ) -> list[tuple[float, float] | None] | None:
    """Per query of ``agreements``, in its order, the pair ``lexical_ratio`` reads: ``third``'s top agreement with
    the dense ranking and with BM25's, ranking the documents either system returned (None for a query BM25 matched
    nothing for); None when there is no third opinion (no ``third``, or an index without document text)."""
    counted = [q for q, a in agreements.items() if a is not None]
    if third is None:
        return None
    witness = third({q: [*_top(dense[q]), *_top(lexical[q])] for q in counted}) if counted else {}
    if witness is None:
        return None
    return [(top_agreement(dense[q], witness[q]) or 0.0, top_agreement(witness[q], lexical[q]) or 0.0)
            if a is not None else None for q, a in agreements.items()]


def group_rows(labels: Sequence[str | None]) -> dict[str | None, list[int]]:
    """The rows of each label (a system, or a dense expert), labels in sorted order (``None`` first): how every
    batch of queries routed to different systems is split, so each system runs once per batch."""
    rows: dict[str | None, list[int]] = {}
    for row, label in enumerate(labels):
        rows.setdefault(label, []).append(row)
    return dict(sorted(rows.items(), key=lambda item: (item[0] is not None, item[0] or "")))


def run_system(system: str, query_ids, dense: Results | None, lexical: Results | None, fusion: FusionSettings,
               k: int, third: Callable[[dict[str, list[str]]], Results | None] | None = None) -> Results:
    """``system``'s top-``k`` for ``query_ids`` from the rankings it needs: ``dense`` (its dense expert's, at least
    ``FUSION_DEPTH`` deep for a hybrid) and ``lexical`` (BM25's); ``auto:<expert>`` as ``resolve`` decides for these
    queries together (with ``third``, as there)."""
    if is_auto(system):
        query_ids = list(query_ids)
        decided = resolve(dict.fromkeys(query_ids, system), dense, lexical, third)
        results = {}
        for chosen, rows in group_rows([decided[q] for q in query_ids]).items():
            results.update(run_system(chosen, [query_ids[i] for i in rows], dense, lexical, fusion, k))
        return {q: results[q] for q in query_ids}
    if system == BM25:
        return {q: dict(list(lexical[q].items())[:k]) for q in query_ids}
    if not system.startswith(HYBRID):
        return {q: dict(list(dense[q].items())[:k]) for q in query_ids}
    weight = fusion.weight(system)
    return {q: fuse(_top(dense[q]), _top(lexical[q]), weight, fusion.fusion, k) for q in query_ids}


def _top(hits: Mapping[str, float]) -> dict[str, float]:
    return dict(islice(hits.items(), FUSION_DEPTH))
