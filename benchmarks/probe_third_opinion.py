"""Probe: a third ranker's estimate of BM25's accuracy next to the base, on the shared datasets' training queries.

For each dataset's routing sample of *training* queries (at most 500, seed 0; never test), with BM25 as it is and
made unhelpful on purpose (``probe_lexical_trust.py``'s stresses: ``random:S`` / ``neighbour:S``), it prints one JSON
line: the base's, BM25's and the hybrid's (dense weight ``--weight``) nDCG@10, the true ratio of BM25's score to
the base's, the mean top agreement (with the prior, as ``trusts_lexical`` reads it), the third ranker's estimate
(``retriever.ranking.unfamiliar.lexical_ratio`` over ``ThirdOpinion``'s ranking of each query's documents from both
systems, exactly as ``auto:base`` computes it), whether BM25 is trusted by agreement alone and with the estimate,
and what ``auto:base`` scores each way. Then the two numbers ``MIN_LEXICAL_RATIO`` is made of: the highest true
ratio at which the hybrid loses (the break-even), and the largest plain estimate (no prior) over the true ratio on
an unstressed corpus of 100 queries or more (how far the estimate runs high where the third ranker shares BM25's
mistakes), and their product.
Usage: ``python benchmarks/probe_third_opinion.py --data-dir DIR --cache-dir DIR`` (about 5 minutes on 2 CPUs).
"""

from __future__ import annotations

import json

import common
import numpy as np
from probe_lexical_trust import DATASETS, _stressed

STRESSES = ["none", "random:0.5", "neighbour:0.5", "random:1.0", "neighbour:1.0"]


def rows_of(name: str, dataset, index, lexical, encoder, ranker, weight: float) -> list[dict]:
    from eval import per_query_ndcg
    from experts import routing_sample
    from retriever import search, search_lexical
    from retriever.ranking.systems import FUSION_DEPTH, auto_systems, fuse, third_opinion_pairs
    from retriever.ranking.third_opinion import ThirdOpinion
    from retriever.ranking.unfamiliar import PRIOR_QUERIES, base_gap, lexical_ratio, top_agreement, trusts_lexical

    qids, texts, qrels = routing_sample(dataset, index)
    dense = search(index, encoder.encode(texts), qids, k=FUSION_DEPTH)
    plain = search_lexical(lexical, texts, qids, FUSION_DEPTH)
    third = ThirdOpinion(ranker, index, dict(zip(qids, texts, strict=True)))
    lines = []
    for stress in STRESSES:
        lex = {q: {d: v for d, v in hits.items() if d != q}  # a swap can bring back a self-hit: search drops them
               for q, hits in _stressed(plain, index, stress).items()}
        hybrid = {q: fuse(dense[q], lex[q], weight, "convex", FUSION_DEPTH) for q in qids}
        scores = {s: per_query_ndcg(qrels, r) for s, r in (("base", dense), ("bm25", lex), ("hybrid", hybrid))}
        agreements = {q: top_agreement(dense[q], lex[q]) for q in qids}
        pairs = third_opinion_pairs(agreements, dense, lex, third)
        if pairs is None:
            raise SystemExit(f"{index.path} keeps no document text: the third ranker has nothing to rank")
        ratio, plain_ratio = lexical_ratio(pairs), lexical_ratio(pairs, prior=0.0)
        values = [a for a in agreements.values() if a is not None]
        gaps = [base_gap(dense[q]) for q in qids]
        line = {"dataset": name, "stress": stress, "queries": len(qids),
                **{s: round(100 * float(np.mean([v[q] for q in qids])), 2) for s, v in scores.items()},
                "agreement": round(sum(values) / (len(values) + PRIOR_QUERIES), 3), "ratio": round(ratio, 3),
                "plain_ratio": round(plain_ratio, 3)}
        line["true_ratio"] = round(line["bm25"] / line["base"], 3) if line["base"] else 0.0
        for label, r in (("agreement_only", None), ("with_ratio", ratio)):
            trusted = trusts_lexical(agreements.values(), r)
            chosen = auto_systems(agreements.values(), gaps, trusted=trusted)
            auto = [scores["base" if s == "base" else "hybrid"][q] for q, s in zip(qids, chosen, strict=True)]
            line[f"trusted_{label}"], line[f"auto_{label}"] = trusted, round(100 * float(np.mean(auto)), 2)
        print(json.dumps(line), flush=True)
        lines.append(line)
    return lines


def main() -> None:
    from retriever import ensure_lexical_index, load_encoder
    from retriever.ranking.third_opinion import TokenEmbeddingRanker

    parser = common.parser(__doc__)
    parser.add_argument("--weight", type=float, default=0.6, help="the hybrid's dense weight [default: 0.6]")
    parser.add_argument("--dataset", action="append", default=[], help="[default: all 8 shared datasets]")
    args = parser.parse_args()
    encoder = load_encoder()
    ranker = TokenEmbeddingRanker(encoder.model)
    opened, indexes = common.open_indexed(args, args.dataset or DATASETS, encoder)
    lines = []
    for name, dataset in opened.items():
        lexical = ensure_lexical_index(dataset, args.cache_dir)
        lines += rows_of(name, dataset, indexes[name], lexical, encoder, ranker, args.weight)
    losing = [r["true_ratio"] for r in lines if r["hybrid"] < r["base"] and r["stress"] != "none"]
    natural = {r["dataset"]: round(r["plain_ratio"] / r["true_ratio"], 3) for r in lines
               if r["stress"] == "none" and r["true_ratio"] and r["queries"] >= 100}
    line = {"break_even_true_ratio": max(losing, default=None), "plain_estimate_over_true": natural,
            "largest_plain_estimate_over_true": max(natural.values(), default=None)}
    if line["break_even_true_ratio"] and natural:
        line["their_product"] = round(line["break_even_true_ratio"] * line["largest_plain_estimate_over_true"], 3)
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
