"""Probe (issue #27): experts trained without relevance judgments, from each source of ``experts.pseudo``, against
the base and the labelled expert on judged *training* queries they never saw.

For each expert dataset D (default: the seven of BENCHMARKS.md section 4b) and each source:

- ``corpus``: ``--pseudo-queries`` sentences drawn from D's documents, each labelled with its document;
- ``queries``: D's training queries with their qrels set aside, each labelled with ``hybrid:base``'s first
  document (dense weight ``--weight``; queries BM25 matches nothing for left out);
- ``corrected``: those of them whose fused first document is not the base's first.

The expert trains as ``routerretriever benchmark`` trains D's labelled one (D's settings in
``experts/training_overrides.json``, anchored on the other datasets' training queries), at most ``--max-steps``
steps, choosing its step on its own pseudo-labelled held-out slice. Scored (nDCG@10 x100) on the *labelled*
held-out slice of D's training split (the queries the labelled expert was selected on; the ``queries`` source
never trains on them): the base, the unlabelled expert, and the labelled expert of ``--labelled`` (a router
directory, e.g. section 4b's) as recorded in its ``expert.json``. Also printed: the trainer's own pseudo-labelled
held-out gain (the self-check's evidence until 2026-12-05; today's check: ``unlabelled_experts.py``). Experts are
saved into ``ROUTER_DIR`` as ``<D>.<source>`` and reused.

Usage: ``python benchmarks/probe_unlabelled.py ROUTER_DIR --labelled /work/routers/sys [--dataset D ...]``
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import common
import numpy as np

DATASETS = ["scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l", "squad"]
SOURCES = ["corpus", "queries", "corrected"]


def main() -> None:
    from eval import paired_bootstrap, per_query_ndcg
    from experts import TrainConfig
    from experts.pairs import anchor_texts
    from experts.pseudo import agreed_queries, corrected_queries, fused_rankings
    from experts.train import heldout_split, train_expert
    from experts.workflows.unlabelled import corpus_pseudo
    from retriever import (
        MultiExpertEncoder,
        RouterDirectory,
        ensure_lexical_index,
        load_encoder,
        search,
    )

    parser = common.parser(__doc__)
    parser.add_argument("router_dir", type=Path, help="where the unlabelled experts are saved (and reused)")
    parser.add_argument("--labelled", type=Path, required=True, help="router directory with the labelled experts")
    parser.add_argument("--dataset", action="append", default=[])
    parser.add_argument("--source", action="append", default=[], choices=SOURCES)
    parser.add_argument("--pseudo-queries", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--weight", type=float, default=0.6)
    args = parser.parse_args()
    names = args.dataset or DATASETS
    overrides = json.loads((Path(__file__).resolve().parent.parent / "experts/training_overrides.json")
                           .read_text())["datasets"]
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, DATASETS, encoder)
    store = RouterDirectory(args.router_dir, encoder.info, create=True)
    labelled = RouterDirectory(args.labelled, encoder.info)
    for name in names:
        dataset, index = opened[name], indexes[name]
        config = TrainConfig.from_fields(overrides.get(name, {}))
        config = dataclasses.replace(config, max_steps=min(config.max_steps or args.max_steps, args.max_steps))
        _, _, dev = heldout_split(dataset, index.doc_ids, "train", config)  # the labelled expert's held-out slice
        dev_ids = [e.query_id for e in dev]
        qrels = dataset.split("train").qrels
        anchors = anchor_texts([opened[o] for o in DATASETS if o != name], documents=config.anchor_documents)
        base_dev = per_query_ndcg({q: qrels[q] for q in dev_ids},
                                  search(index, encoder.encode([e.text for e in dev]), dev_ids, k=100))
        own = json.loads((labelled.root / "experts" / name / "expert.json").read_text())["metrics"]
        for source in args.source or SOURCES:
            if source == "corpus":
                pseudo = corpus_pseudo(dataset, args.pseudo_queries, config.seed)[0]  # as train-expert draws
            else:
                held = set(dev_ids)
                queries = {q: t for q, t in dataset.split("train").queries.items() if q not in held}
                dense, fused = fused_rankings(queries, index, encoder, ensure_lexical_index(dataset, args.cache_dir),
                                              args.weight)
                pseudo = (agreed_queries(dataset, queries, fused) if source == "queries"
                          else corrected_queries(dataset, queries, fused, dense))
            expert_name = f"{name}.{source}"
            if expert_name not in store.expert_names():
                trained = train_expert([(pseudo, index)], encoder, config, anchors=anchors)
                store.save_expert(expert_name, trained.write, trained.meta())
            meta = json.loads((store.root / "experts" / expert_name / "expert.json").read_text())
            multi = store.load_into(MultiExpertEncoder(encoder), [expert_name])
            vectors = multi.encode([e.text for e in dev], expert_name)
            mine = per_query_ndcg({q: qrels[q] for q in dev_ids}, search(index, vectors, dev_ids, k=100))
            diff = paired_bootstrap([(mine, base_dev)])
            print(json.dumps({
                "dataset": name, "source": source, "pseudo_queries": len(pseudo.data.queries),
                "pseudo_heldout_base": round(100 * meta["metrics"]["heldout_base_ndcg@10"], 2),
                "pseudo_heldout_expert": round(100 * meta["metrics"]["heldout_ndcg@10"], 2),
                "dev_queries": len(dev_ids), "dev_base": round(100 * float(np.mean(list(base_dev.values()))), 2),
                "dev_unlabelled": round(100 * float(np.mean(list(mine.values()))), 2),
                "dev_labelled": round(100 * own["heldout_ndcg@10"], 2),
                "unlabelled_minus_base": [round(100 * v, 2) for v in diff],
                "best_step": meta.get("training", {}).get("best_step")}), flush=True)


if __name__ == "__main__":
    main()
