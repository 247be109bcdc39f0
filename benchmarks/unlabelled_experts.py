"""Experts trained without judgments (issue #27) on each expert dataset's *test* split (``--split``), against the
base and the labelled expert, with the self-check's verdict beside the outcome.

For each expert dataset D and each unlabelled expert of D in ROUTER_DIR (``<D>.<source>`` as
``probe_unlabelled.py`` saves them, or ``D`` as ``benchmark --unlabelled`` does): test nDCG@10 x100 of the base,
the unlabelled expert and D's labelled expert (from ``--labelled``, e.g. BENCHMARKS.md section 4b's router
directory), the unlabelled expert minus the base with a paired-bootstrap 95% interval, and whether the self-check
keeps it: ``experts.workflows.unlabelled.self_check`` run again on the corpus's check pseudo-queries
(``corpus_pseudo``: documents the expert did not train on), so experts saved before the check changed are judged
by today's check. Then the confusion of the check against the outcome on the split (significantly below the base,
or not). One JSON line per expert, then the confusion.

Usage: ``python benchmarks/unlabelled_experts.py ROUTER_DIR --labelled DIR [--source corpus ...]``
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import common
import numpy as np

DATASETS = ["scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l", "squad"]


def main() -> None:
    from eval import paired_bootstrap, per_query_ndcg
    from experts.workflows.unlabelled import PSEUDO_QUERIES, SELF_CHECK_MARGIN, corpus_pseudo, self_check
    from retriever import MultiExpertEncoder, RouterDirectory, load_encoder, search

    parser = common.parser(__doc__)
    parser.add_argument("router_dir", type=Path)
    parser.add_argument("--labelled", type=Path, required=True)
    parser.add_argument("--source", action="append", default=[])
    parser.add_argument("--margin", type=float, default=SELF_CHECK_MARGIN,
                        help="what the self-check interval's lower end must exceed")
    parser.add_argument("--split", default="test", help="the judged split scored [default: test; train: what a "
                        "margin may be chosen on; the labelled expert trained on it, so its column is optimistic]")
    args = parser.parse_args()
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, DATASETS, encoder)
    store, labelled = RouterDirectory(args.router_dir, encoder.info), RouterDirectory(args.labelled, encoder.info)
    multi = MultiExpertEncoder(encoder)
    confusion = Counter()
    for name in DATASETS:
        split = opened[name].split(args.split)
        ids = list(split.queries)
        texts = [split.queries[q] for q in ids]

        def scores(vectors, split=split, index=indexes[name], ids=ids):
            return per_query_ndcg(split.qrels, search(index, vectors, ids, k=100))

        base = scores(encoder.encode(texts))
        multi.add(f"labelled:{name}", labelled.load_factors(name))
        own = scores(multi.encode(texts, f"labelled:{name}"))
        for expert in [e for e in store.expert_names() if e.split(".")[0] == name]:
            source = store.expert_info(expert).get("unlabelled", {}).get("source", expert.split(".", 1)[-1])
            if args.source and source not in args.source:
                continue
            multi.add(expert, store.load_factors(expert))
            mine = scores(multi.encode(texts, expert))
            seed = store.expert_info(expert)["training"]["hyperparameters"]["seed"]
            check = self_check(corpus_pseudo(opened[name], PSEUDO_QUERIES, seed)[1], indexes[name], encoder.encode,
                               lambda texts, expert=expert: multi.encode(texts, expert), args.margin)
            diff = [round(100 * v, 2) for v in paired_bootstrap([(mine, base)])]
            kept, below = check["passed"], diff[2] < 0
            confusion[f"{'kept' if kept else 'refused'}, {'below base' if below else 'not below base'}"] += 1
            print(json.dumps({"dataset": name, "split": args.split, "source": source, "queries": len(ids),
                              "base": round(100 * float(np.mean(list(base.values()))), 2),
                              "unlabelled": round(100 * float(np.mean(list(mine.values()))), 2),
                              "labelled": round(100 * float(np.mean(list(own.values()))), 2),
                              "unlabelled_minus_base": diff, "self_check_gain": round(100 * check["gain"], 2),
                              "self_check_interval": [round(100 * v, 2) for v in check["interval"]],
                              "kept": kept}), flush=True)
            multi.remove(expert)
        multi.remove(f"labelled:{name}")
    print(json.dumps({"margin": args.margin, "confusion": dict(confusion)}))


if __name__ == "__main__":
    main()
