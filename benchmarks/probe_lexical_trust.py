"""Probe: how much lexical evidence to trust on a corpus the router has never seen, from evidence without labels.

For each dataset's routing sample of *training* queries (at most 500, seed 0; never test) it ranks with the base
model and BM25 (top 100 each), scores ``base``, ``bm25`` and the convex hybrid at every dense weight 0, 0.1, ..., 1
by per-query nDCG@10, and records label-free signals of the two rankings: how far BM25's top 10 are corroborated
by the base's top 100 (``corroboration``), the top-10 overlap, and each system's top document's place in the other's
list (``agreement``: ``retriever.ranking.unfamiliar.top_agreement``).

Stress (``--stress``): the same queries with the lexical side made unhelpful but confident. ``random:S``: a share S
of the BM25 index's documents answer as a random other document (a fixed permutation), so BM25 ranks wrong
documents with the score distribution of right ones; ``neighbour:S``: each of a share S answers as its nearest
other document in the base's space, so BM25's picks are plausible and wrong (what hurts a hybrid most). Each
stress family is a dose-response curve: how the hybrid's gain over the base falls with BM25's agreement.

Prints one JSON line per dataset and stress level: the means of the scores and signals, whether
``retriever.ranking.unfamiliar.trusts_lexical`` trusts BM25 on these queries taken together, and what ``auto:base`` then
scores (``hybrid`` at ``--weight`` for every query if trusted, else for the queries the base is undecided on
(``base_gap`` below ``UNDECIDED_GAP``) and ``base`` for the rest; ``fused``: the share of queries fused). Caches the
per-query rows in ``--cache``. Usage: ``python benchmarks/probe_lexical_trust.py --cache /work/probe-lexical.json``
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import common
import numpy as np

DATASETS = ["scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l", "squad",
            "aila2019-statutes"]
WEIGHTS = np.round(np.arange(0.0, 1.0001, 0.1), 1)
DEPTH = 100
SIGNALS = ("agreement", "corroboration", "overlap10", "rr_bm25_of_dense1", "rr_dense_of_bm251", "hits")


def collect(args) -> dict:
    from eval import per_query_ndcg
    from experts import routing_sample
    from retriever import ensure_lexical_index, load_encoder, search, search_lexical
    from retriever.ranking.systems import fuse
    from retriever.ranking.unfamiliar import base_gap, top_agreement

    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, args.dataset, encoder)
    rows = []
    for name in args.dataset:
        index = indexes[name]
        lexical = ensure_lexical_index(opened[name], args.cache_dir)
        qids, texts, qrels = routing_sample(opened[name], index)
        dense = search(index, encoder.encode(texts), qids, k=DEPTH)
        plain = search_lexical(lexical, texts, qids, DEPTH)
        for stress in ["none", *args.stress]:
            lex = _stressed(plain, index, stress)
            per_weight = []
            for w in WEIGHTS:
                fused = {q: fuse(dense[q], lex[q], float(w), "convex", DEPTH) for q in qids}
                ndcg = per_query_ndcg(qrels, fused)
                per_weight.append([ndcg[q] for q in qids])
            chance = min(1.0, DEPTH / len(index.doc_ids))
            for i, q in enumerate(qids):
                d, b = list(dense[q]), list(lex[q])
                rows.append({"dataset": name, "stress": stress, "scores": [p[i] for p in per_weight],
                             "agreement": top_agreement(dense[q], lex[q]), "gap": base_gap(dense[q]),
                             "corroboration": _corroboration(d, b, chance),
                             "overlap10": len(set(d[:10]) & set(b[:10])) / 10,
                             "rr_bm25_of_dense1": 1 / (1 + b.index(d[0])) if d and d[0] in b else 0.0,
                             "rr_dense_of_bm251": 1 / (1 + d.index(b[0])) if b and b[0] in d else 0.0,
                             "hits": len(b) / DEPTH,
                             "dense10": [round(float(v), 4) for v in list(dense[q].values())[:10]],
                             "bm25_10": [round(float(v), 4) for v in list(lex[q].values())[:10]],
                             "rank_in_bm25_of_dense10": [b.index(x) + 1 if x in b else 0 for x in d[:10]],
                             "rank_in_dense_of_bm25_10": [d.index(x) + 1 if x in d else 0 for x in b[:10]]})
        print(json.dumps({"ranked": name, "queries": len(qids)}), flush=True)
    return {"rows": rows}


def _corroboration(dense: list[str], lexical: list[str], chance: float) -> float:
    """The share of BM25's top 10 in the base's top 100, corrected for chance."""
    if not lexical or chance >= 1:
        return 0.0
    share = len(set(lexical[:10]) & set(dense)) / len(lexical[:10])
    return max(0.0, (share - chance) / (1 - chance))


def _stressed(results: dict, index, stress: str) -> dict:
    """BM25's rankings with a share S of the corpus's documents swapped for others (a fixed draw): ``random:S`` for
    random documents (a permutation), ``neighbour:S`` each for its nearest other document in the base's space
    (plausible and wrong)."""
    if stress == "none":
        return results
    doc_ids = index.doc_ids
    kind, _, share = stress.partition(":")
    rng = np.random.default_rng(0)
    moved = rng.random(len(doc_ids)) < float(share or 1.0)
    targets = np.array(doc_ids, dtype=object)
    if kind == "neighbour":
        vectors = index.index.reconstruct_n(0, len(doc_ids))
        _, rows = index.index.search(vectors, 2)
        nearest = np.array([r[1] if r[0] == i else r[0] for i, r in enumerate(rows)])
        targets[moved] = np.array(doc_ids, dtype=object)[nearest[moved]]
    else:
        targets[moved] = rng.permutation(targets[moved])
    swap = dict(zip(doc_ids, targets.tolist(), strict=True))
    return {q: {swap[d]: s for d, s in hits.items()} for q, hits in results.items()}


def main() -> None:
    from retriever.ranking.systems import BASE, auto_systems
    from retriever.ranking.unfamiliar import trusts_lexical

    parser = common.parser(__doc__)
    parser.add_argument("--cache", type=Path, help="a JSON file keeping the per-query rows between runs")
    parser.add_argument("--stress", action="append", default=[],
                        help="random:SHARE or neighbour:SHARE (repeatable) [default: shares 0.25, 0.5, 0.75, 1 of "
                        "both]")
    parser.add_argument("--weight", type=float, default=0.6, help="the hybrid's dense weight [default: 0.6, "
                        "hybrid:base's as calibrated in BENCHMARKS.md section 4b]")
    parser.add_argument("--dataset", action="append", default=[], help="[default: all 8 shared datasets]")
    args = parser.parse_args()
    args.dataset = args.dataset or DATASETS
    args.stress = args.stress or [f"{kind}:{share}" for kind in ("random", "neighbour")
                                  for share in (0.25, 0.5, 0.75, 1.0)]
    data = common.cached(args.cache, lambda: collect(args))
    rows = data["rows"]
    if rows and "gap" not in rows[0]:
        raise SystemExit(f"{args.cache} was written before the rows carried the base's gap: give a new --cache file")
    hybrid = int(round(10 * args.weight))
    summary = {}
    for key in sorted({(r["dataset"], r["stress"]) for r in rows}, key=lambda k: (DATASETS.index(k[0]), k[1])):
        mine = [r for r in rows if (r["dataset"], r["stress"]) == key]
        scores = np.array([r["scores"] for r in mine])
        matched = [r["agreement"] for r in mine if r["agreement"] is not None]
        trusted = trusts_lexical(r["agreement"] for r in mine)
        fused = np.array([s != BASE for s in auto_systems([r["agreement"] for r in mine], [r["gap"] for r in mine])])
        summary[key] = line = {
            "dataset": key[0], "stress": key[1], "queries": len(mine),
            "base": round(100 * scores[:, -1].mean(), 2), "bm25": round(100 * scores[:, 0].mean(), 2),
            "hybrid": round(100 * scores[:, hybrid].mean(), 2), "trusted": trusted,
            "auto": round(100 * np.where(fused, scores[:, hybrid], scores[:, -1]).mean(), 2),
            "fused": round(float(fused.mean()), 3),
            "best_weight": float(WEIGHTS[int(np.argmax(scores.mean(axis=0)))]),
            "agreement": round(float(np.mean(matched)) if matched else 0.0, 3),
            **{s: round(float(np.mean([r[s] for r in mine])), 3) for s in SIGNALS if s != "agreement"},
        }
        print(json.dumps(line), flush=True)
    breaks = {}
    for name in dict.fromkeys(k[0] for k in summary):
        for family in ("random", "neighbour"):
            curve = sorted([(v["agreement"], v["hybrid"] - v["base"]) for k, v in summary.items()
                            if k[0] == name and (k[1] == "none" or k[1].startswith(family + ":"))], reverse=True)
            if len(curve) > 1:
                breaks[f"{name} {family}"] = _break_even(curve)
    print(json.dumps({"break_even_agreement": breaks,
                      "highest": max(breaks.values(), default=None)}), flush=True)


def _break_even(curve: list[tuple[float, float]]) -> float:
    """The agreement at which the hybrid's gain over the base crosses 0, going down a dose-response curve
    ``[(agreement, gain)]`` sorted by agreement, highest first (linear between points): the unstressed agreement
    where the hybrid loses already there, the lowest point's where it never does."""
    if curve[0][1] < 0:
        return curve[0][0]
    for (a_hi, g_hi), (a_lo, g_lo) in pairwise(curve):
        if g_lo < 0 <= g_hi:
            return round(a_lo + (a_hi - a_lo) * (0 - g_lo) / (g_hi - g_lo), 3)
    return curve[-1][0]


if __name__ == "__main__":
    main()
