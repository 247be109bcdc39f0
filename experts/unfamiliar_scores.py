"""``auto:base`` in router calibration: the evidence it decides from, cached with the base's routing scores.

Search sends the unfamiliar queries of a call to ``auto:base``, which trusts BM25 from their agreement with the base
and a third ranker's opinion (``retriever.ranking.unfamiliar``). Calibration fits the routers' novelty thresholds
against ``auto:base``'s score on each dataset's routing queries, decided the same way: ``evidence`` is cached in the
base's record of ``experts.routing_cache.score_experts`` (per query: agreement, the base's gap and the third
ranker's pair), and ``auto_scores`` reads it back as ``resolve`` decides at search time, each dataset's routing
queries together, as one call's. A dataset's few hundred routing queries always count enough to consult the third
ranker; a search call of fewer than about ten unfamiliar queries never does (``could_vouch``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from retriever.encoding.expert_encoder import BASE_EXPERT
from retriever.ranking.systems import AUTO, auto_systems, third_opinion_pairs
from retriever.ranking.third_opinion import THIRD_VERSION, third_opinion
from retriever.ranking.topk import Results
from retriever.ranking.unfamiliar import base_gap, lexical_trust, top_agreement

__all__ = ["auto_scores", "cached_auto_systems", "evidence", "evidence_complete"]

logger = logging.getLogger(__name__)


def evidence(qids: list[str], texts: list[str], dense: Results, lexical: Callable[[], Results], model, index,
             pseudo: bool) -> dict:
    """What ``auto:base`` decides from on these routing queries (``dense``: the base's rankings; ``lexical()``:
    BM25's; ``model``: the base sentence-transformers model; ``index``: the corpus index, for document text). The
    third ranker's pairs are left out for pseudo-queries (``pseudo``), where ``auto:base`` scores as the base."""
    record = {"agreement": [top_agreement(dense[q], lexical()[q]) for q in qids],
              "gap": [base_gap(dense[q]) for q in qids]}
    if not pseudo:  # None: the index keeps no document text
        record["third"] = third_opinion_pairs(dict(zip(qids, record["agreement"], strict=True)), dense, lexical(),
                                              third_opinion(model, index, dict(zip(qids, texts, strict=True))))
        record["third_version"] = THIRD_VERSION
    return record


def evidence_complete(cached: dict, rows: int, pseudo: bool) -> bool:
    """The base's cached evidence is complete for ``rows`` queries (the third opinion's: current, unless
    ``pseudo``)."""
    return _agreement_cached(cached, rows) and (pseudo or _third_cached(cached, rows))


def _agreement_cached(cached: dict, rows: int) -> bool:
    """The base's cached top agreement with BM25 and its own gap, one value each per query."""
    agreement, gap = cached.get("agreement"), cached.get("gap")
    return isinstance(agreement, list) and len(agreement) == rows and all(
        a is None or (isinstance(a, int | float) and 0 <= a <= 1) for a in agreement) and isinstance(
        gap, list) and len(gap) == rows and all(g is None or isinstance(g, int | float) for g in gap)


def _third_cached(cached: dict, rows: int) -> bool:
    """The third ranker's cached ``lexical_ratio`` pair per query (None where BM25 matched nothing), or None for
    an index without document text, from the current third ranker (``THIRD_VERSION``)."""
    if "third" not in cached or cached.get("third_version") != THIRD_VERSION:
        return False
    third = cached["third"]
    return third is None or isinstance(third, list | tuple) and len(third) == rows and all(
        p is None or (isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(v, int | float) for v in p))
        for p in third)


def cached_auto_systems(base: dict, dataset: str) -> list[str] | None:
    """What ``auto:base`` is for each of a dataset's routing queries, from the base's cached record (``base``), as
    search decides for a call's unfamiliar queries; None when agreement and gap are not cached."""
    rows = len(base["ndcg@10"])
    if not _agreement_cached(base, rows):
        # routing data cached before auto:base decided this way: refits from the cache alone (experts remove)
        # then send unfamiliar queries to the base, the safe choice, until build-router scores them again
        logger.warning("no agreement of the base with BM25 or base gap cached for %r; unfamiliar queries go to "
                       "the base until build-router is run again", dataset)
        return None
    def third() -> list | None:  # asked for by lexical_trust only where the third opinion could change the answer
        if _third_cached(base, rows):
            return base["third"]
        logger.warning("no current third opinion cached for %r; calibrated on agreement alone until build-router "
                       "is run again", dataset)  # cached before this third ranker
        return None

    return auto_systems(base["agreement"], base["gap"], trusted=lexical_trust(base["agreement"], third))


def auto_scores(records: dict, names: list[str], scores: np.ndarray, systems: list[str],
                pseudo: set[str] = frozenset()) -> np.ndarray | None:
    """Per query (``names``: its dataset), the nDCG@10 of ``auto:base`` from the ``scores`` columns of ``systems``:
    each dataset's routing queries decide together (``cached_auto_systems``, from ``records[dataset]["base"]``);
    on the pseudo-queries of a dataset in ``pseudo``, the ``auto:base`` column (scored as the base,
    ``experts.routing_cache.cached_routing_data``). None if a dataset has no cached agreement."""
    scored = np.empty(len(scores))
    for d in dict.fromkeys(names):
        rows = [i for i, name in enumerate(names) if name == d]
        if d in pseudo:
            scored[rows] = scores[rows, systems.index(AUTO)]
            continue
        chosen = cached_auto_systems(records[d][BASE_EXPERT], d)
        if chosen is None:
            return None
        repeats, rest = divmod(len(rows), len(chosen))  # a dataset named twice has its rows twice
        if rest:
            raise ValueError(f"{d}: {len(rows)} routing rows for {len(chosen)} cached queries")
        scored[rows] = scores[rows, [systems.index(s) for s in chosen * repeats]]
    return scored
