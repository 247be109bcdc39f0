"""Where routed search's time goes, for one batch: the base pass, routing, the resumed mixed pass, the dense,
BM25 and fusion steps, and the share of the batch's tokens routed to an
expert. A router on base embeddings (``--route-on embeddings``, the default) only; each step is the median of
``--repeats`` runs.

Usage: ``python benchmarks/routed_profile.py --router DIR --index-dataset scifact --dataset D [--dataset D ...]``
(the queries as ``latency.py`` draws them: 256 test queries round-robin from the datasets). The last two steps are
the worst case of the third opinion (``retriever.ranking.third_opinion``): every query of the batch taken as
unfamiliar and the third ranker consulted for all of them, on a first call (a new ranker tokenises the top documents
of the base and BM25) and on a call whose documents it has seen (the ranker keeps their vectors).
"""

from __future__ import annotations

import json
import statistics
import time

import common
import numpy as np
from latency import indexes, round_robin


def main() -> None:
    from retriever import RouterRetriever, search, search_lexical
    from retriever.ranking.systems import FUSION_DEPTH, dense_part, is_lexical, run_system, third_opinion_pairs
    from retriever.ranking.third_opinion import ThirdOpinion, TokenEmbeddingRanker
    from retriever.ranking.unfamiliar import top_agreement

    parser = common.parser(__doc__)
    parser.add_argument("--router", required=True)
    parser.add_argument("--index-dataset", default="scifact")
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rr = RouterRetriever.load(args.router)
    if rr.router.space.layer is not None:
        raise SystemExit("this profile is for routers on base embeddings; the router routes on a prefix space")
    encoder = rr.encoder
    index, lexical = indexes(args, args.index_dataset, encoder.base, None)
    queries = round_robin(args.data_dir, args.dataset)
    ids = [f"q{i}" for i in range(len(queries))]
    layers = {encoder.start_layer(e) for e in {dense_part(s) for s in rr.router.systems} - {None, "base"}}
    base, kept = encoder.encode_keeping(queries, layers)
    choice = rr.router.route(base).choice
    names = [dense_part(s) for s in choice]
    routed = encoder.resume(kept, names)

    def ranked():
        dense = {}
        for expert in sorted({n for n in names if n is not None}):
            rows = [i for i, n in enumerate(names) if n == expert]
            dense.update(search(index, routed[rows], [ids[i] for i in rows], k=FUSION_DEPTH))
        return dense

    rows = [i for i, s in enumerate(choice) if is_lexical(s)]
    dense = ranked()
    lexical_hits = search_lexical(lexical, [queries[i] for i in rows], [ids[i] for i in rows], FUSION_DEPTH)

    base_dense = search(index, base, ids, k=FUSION_DEPTH)
    all_lexical = search_lexical(lexical, queries, ids, FUSION_DEPTH)
    agreements = {q: top_agreement(base_dense[q], all_lexical[q]) for q in ids}

    kept_ranker = TokenEmbeddingRanker(encoder.base.model)

    def third(ranker):
        return third_opinion_pairs(agreements, base_dense, all_lexical,
                                   ThirdOpinion(ranker, index, dict(zip(ids, queries, strict=True))))

    def fused():
        for system in set(choice):
            run_system(system, [ids[i] for i, s in enumerate(choice) if s == system], dense, lexical_hits,
                       rr.fusion, 10)

    steps = {"base pass (keeping states)": lambda: encoder.encode_keeping(queries, layers),
             "route": lambda: rr.router.route(base),
             "resumed mixed pass": lambda: encoder.resume(kept, names),
             "dense search, depth 100": ranked,
             "bm25 search": lambda: search_lexical(lexical, [queries[i] for i in rows], [ids[i] for i in rows],
                                                   FUSION_DEPTH),
             "fusion": fused,
             "third opinion, every query unfamiliar, first call": lambda: third(TokenEmbeddingRanker(
                 encoder.base.model)),
             "third opinion, every query unfamiliar, documents seen": lambda: third(kept_ranker)}
    third(kept_ranker)
    seconds = {}
    for name, step in steps.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        seconds[name] = round(statistics.median(times), 3)
    tokens = np.array([len(t) for t in encoder.base.model.tokenizer(
        queries, truncation=True, max_length=encoder.base.model.max_seq_length)["input_ids"]])
    to_expert = np.array([n not in (None, "base") for n in names])
    print(json.dumps({"queries": len(queries), "to_an_expert": int(to_expert.sum()),
                      "token_share_to_an_expert": round(float(tokens[to_expert].sum() / tokens.sum()), 3),
                      "seconds": seconds}))


if __name__ == "__main__":
    main()
