"""Probe: Rocchio pseudo-relevance feedback on the base's query vectors, alone and inside ``hybrid:base``.

Query side only (the shared index is untouched): a query's vector becomes ``a * q + (1 - a) * mean(top-k
documents' vectors)``, normalised, and is searched again. On each expert dataset's routing sample of *training*
queries (at most 500, seed 0; never test), prints mean nDCG@10 x100 of the base, ``hybrid:base`` (dense weight
0.6, its calibrated value) and both with feedback, for k in 3, 5 and a in 0.5, 0.7.

Usage: ``python benchmarks/probe_prf.py``
"""

from __future__ import annotations

import json

import common
import numpy as np
from probe_qpp import DATASETS, DEPTH

HYBRID_WEIGHT = 0.6


def main() -> None:
    from eval import per_query_ndcg
    from experts import routing_sample
    from retriever import ensure_lexical_index, load_encoder, search, search_lexical
    from retriever.ranking.systems import fuse

    args = common.parser(__doc__).parse_args()
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, DATASETS, encoder)
    for name in DATASETS:
        index = indexes[name]
        lexical = ensure_lexical_index(opened[name], args.cache_dir)
        qids, texts, qrels = routing_sample(opened[name], index)
        row = {d: i for i, d in enumerate(index.doc_ids)}
        vectors = encoder.encode(texts)
        lex = search_lexical(lexical, texts, qids, DEPTH)

        def mean_ndcg(dense, hybrid: bool, lex=lex, qrels=qrels) -> float:
            results = {q: fuse(dense[q], lex[q], HYBRID_WEIGHT) for q in qrels} if hybrid else dense
            return round(100 * float(np.mean(list(per_query_ndcg(qrels, results).values()))), 2)

        dense = search(index, vectors, qids, k=DEPTH)
        out = {"base": mean_ndcg(dense, False), "hybrid:base": mean_ndcg(dense, True)}
        for k in (3, 5):
            feedback = np.stack([index.embeddings[[row[d] for d in list(dense[q])[:k]]].mean(axis=0) for q in qids])
            for a in (0.5, 0.7):
                moved = a * vectors + (1 - a) * feedback
                moved = (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)
                again = search(index, moved, qids, k=DEPTH)
                out[f"prf k={k} a={a}"] = mean_ndcg(again, False)
                out[f"hybrid prf k={k} a={a}"] = mean_ndcg(again, True)
        print(json.dumps({"dataset": name, **out}), flush=True)


if __name__ == "__main__":
    main()
