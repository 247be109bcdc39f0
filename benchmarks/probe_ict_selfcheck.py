"""Probe: would an inverse-cloze self-check predict an unlabelled expert's real (test) gain better than today's?

The self-check of its day scored an expert on held-out pseudo-queries whose sentence is still in its document (since
2026-12-05 it scores sentences of documents outside the training draw, docs/probe-log.md §21). Here the
sentence is taken out (``probe_ict.ict_queries``: the document re-encoded without it), from documents outside the
expert's training draw where the corpus has enough, so neither the base nor the expert can match the copy. For each
dataset D with an expert ``D`` in ROUTER_DIR (``benchmark --unlabelled`` names them so) and, for reference, D's
labelled expert in ``--labelled``: nDCG@10 x100 of base and experts on those queries, with and without the
sentence in the document, each expert minus the base with a paired-bootstrap 95% interval.
Usage: ``python benchmarks/probe_ict_selfcheck.py ROUTER_DIR --labelled DIR``
"""

from __future__ import annotations

import json
from pathlib import Path

import common
import numpy as np
from probe_ict import ict_queries, interval, ndcg
from probe_lexical_trust import DATASETS


def main() -> None:
    from experts.pseudo import corpus_queries
    from experts.workflows.unlabelled import PSEUDO_QUERIES
    from retriever import MultiExpertEncoder, RouterDirectory, load_encoder

    parser = common.parser(__doc__)
    parser.add_argument("router_dir", type=Path)
    parser.add_argument("--labelled", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    encoder = load_encoder()
    store, labelled = RouterDirectory(args.router_dir, encoder.info), RouterDirectory(args.labelled, encoder.info)
    names = [d for d in DATASETS if d in store.expert_names()]
    opened, indexes = common.open_indexed(args, names, encoder)
    multi = MultiExpertEncoder(encoder)
    for name in names:
        dataset, index = opened[name], indexes[name]
        trained = set().union(*corpus_queries(dataset, PSEUDO_QUERIES).split("train").qrels.values())
        queries, changed = ict_queries(dataset, 10 * args.queries, seed=1)
        unseen = [d for d in queries if d not in trained][: args.queries]
        overlap = len(unseen) < 100
        chosen = list(queries)[: args.queries] if overlap else unseen
        doc_ids = list(index.doc_ids)
        vectors = index.index.reconstruct_n(0, len(doc_ids))
        full = vectors.copy()
        rows = [doc_ids.index(d) for d in chosen]
        vectors[rows] = encoder.encode([changed[d] for d in chosen])
        multi.add("unlabelled", store.load_factors(name))
        multi.add("labelled", labelled.load_factors(name))
        texts = [queries[d] for d in chosen]
        q = {"base": encoder.encode(texts), "unlabelled": multi.encode(texts, "unlabelled"),
             "labelled": multi.encode(texts, "labelled")}
        line = {"dataset": name, "queries": len(chosen), "overlaps_training": overlap}
        for corpus, matrix in (("ict", vectors), ("kept", full)):
            score = {}
            for system, qv in q.items():
                sims = qv @ matrix.T
                top = np.argsort(-sims, axis=1)[:, :10]
                score[system] = ndcg({d: {doc_ids[j]: float(sims[i, j]) for j in top[i]} for i, d in enumerate(chosen)})
            line[f"{corpus}_base"] = round(100 * score["base"].mean(), 2)
            for system in ("unlabelled", "labelled"):
                line[f"{corpus}_{system}_minus_base"] = interval(score[system], score["base"])
        multi.remove("unlabelled")
        multi.remove("labelled")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
