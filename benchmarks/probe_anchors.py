"""Probe the anchor weight on one dataset: in-domain held-out nDCG@10 along the way, and how much the expert
changes nDCG@10 on the *other* expert datasets' held-out train queries (its cost when the router misroutes).

Usage: ``python benchmarks/probe_anchors.py scifact '<TrainConfig JSON>' 3,1 [--ref ROUTER_DIR] [--documents N]
[--check DATASET]`` (data from ``$ROUTERRETRIEVER_DATA_DIR``, indexes cached in ``$ROUTERRETRIEVER_CACHE_DIR``).
Anchors are 200 queries of each other dataset's training slice, plus N documents of each other dataset's corpus
with ``--documents``; the change is measured on those datasets' held-out slices (never test), the in-domain
score on the target's held-out slice, and with ``--check`` on the train split of a dataset that has no expert
(e.g. aila2019-statutes). ``--ref`` also measures the saved expert of the same name in ROUTER_DIR. Nothing is
saved.
"""

from __future__ import annotations

import json
import time

import common
import numpy as np


def main() -> None:
    from eval import per_query_ndcg
    from experts import DEFAULT_EXPERT_DATASETS, TrainConfig, anchor_texts, heldout_split, train_expert
    from retriever import MultiExpertEncoder, RouterDirectory, load_encoder, search

    parser = common.parser(__doc__)
    parser.add_argument("target")
    parser.add_argument("spec", type=json.loads, help="TrainConfig fields as JSON")
    parser.add_argument("weights", type=lambda text: [float(w) for w in text.split(",")], help="e.g. 3,1")
    parser.add_argument("--ref", metavar="ROUTER_DIR")
    parser.add_argument("--documents", type=int, default=0)
    parser.add_argument("--check", metavar="DATASET")
    args = parser.parse_args()
    target, spec, weights = args.target, args.spec, args.weights
    DATASETS = list(DEFAULT_EXPERT_DATASETS)
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, DATASETS, encoder)
    anchors, heldout = [], {}
    rng = np.random.default_rng(0)
    for name in DATASETS:
        if name != target:
            _, train, heldout[name] = heldout_split(opened[name], indexes[name].doc_ids, "train", TrainConfig())
            anchors += [train[i].text for i in rng.permutation(len(train))[:200]]
    documents = args.documents
    anchors += anchor_texts([opened[name] for name in DATASETS if name != target], queries=0, documents=documents)
    _, _, heldout[target] = heldout_split(opened[target], indexes[target].doc_ids, "train",
                                          TrainConfig.from_fields(spec))
    check = args.check
    if check:
        extra, extra_index = common.open_indexed(args, [check], encoder)
        opened.update(extra)
        indexes.update(extra_index)

    def ndcg(name, encode) -> float:
        split = opened[name].split("train")
        ids = [e.query_id for e in heldout[name]] if name in heldout else sorted(split.qrels)
        texts = [e.text for e in heldout[name]] if name in heldout else [split.queries[q] for q in ids]
        results = search(indexes[name], encode(texts), ids, k=100)
        return float(np.mean(list(per_query_ndcg({q: split.qrels[q] for q in ids}, results).values())))

    others = [name for name in heldout if name != target]
    base = {name: ndcg(name, encoder.encode) for name in [*heldout, *([check] if check else [])]}
    anchor_base = encoder.encode(anchors)

    def report(label, encode, extra):
        change = {name: round(100 * (ndcg(name, encode) - base[name]), 2) for name in others}
        if check:
            extra = {**extra, f"{check} train": [round(100 * base[check], 2), round(100 * ndcg(check, encode), 2)]}
        drift = float(((encode(anchors) - anchor_base) ** 2).sum(1).mean())
        mean = round(float(np.mean(list(change.values()))), 2)
        print(json.dumps({"target": target, "run": label, **extra, "heldout": round(ndcg(target, encode), 4),
                          "anchor_drift": round(drift, 4),
                          "offdomain_gain_x100": change, "offdomain_mean": mean}), flush=True)

    if args.ref:
        store = RouterDirectory(args.ref, encoder.info)
        ref = store.load_into(MultiExpertEncoder(encoder), [target])
        report("saved", lambda texts: ref.encode(texts, target), {})
    for weight in weights:
        config = TrainConfig.from_fields({**spec, "anchor_weight": weight})
        start = time.perf_counter()
        result = train_expert([(opened[target], indexes[target])], encoder, config, anchors=anchors)
        report(f"weight={weight}", result.encode,
               {"seconds": round(time.perf_counter() - start), "best_step": result.best_step,
                "history": [h["heldout_ndcg@10"] for h in result.history]})


if __name__ == "__main__":
    main()
