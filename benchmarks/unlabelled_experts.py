"""Experts trained without judgments (issue #27) on each expert dataset's *test* split (``--split``), against the
base and the labelled expert, with the self-check's verdict beside the outcome.

For each expert dataset D and each unlabelled expert of D in ROUTER_DIR (``<D>.<source>`` as
``probe_unlabelled.py`` saves them, or ``D`` as ``benchmark --unlabelled`` does): test nDCG@10 x100 of the base,
the unlabelled expert and D's labelled expert (from ``--labelled``, e.g. BENCHMARKS.md section 4b's router
directory), the unlabelled expert minus the base and minus the labelled expert with paired-bootstrap 95% intervals,
and whether the self-check keeps it: ``experts.workflows.unlabelled.self_check`` run again on the pseudo-queries
today's check draws (``check_queries``), less any whose document the expert's own training draw holds (an expert
saved before 2026-12-05 may have trained on them; ``check_overlap`` counts them, and with fewer than 2 left it is
refused), so every expert is judged by today's check. Then the confusion of the check against the outcome on the
split (significantly below the base, or not). One JSON line per expert, then the confusion.

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
    from experts.workflows.unlabelled import SELF_CHECK_MARGIN
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
            check, overlap = _check(store.expert_info(expert), source, opened[name], indexes[name], encoder.encode,
                                    lambda texts, expert=expert: multi.encode(texts, expert), args.margin)
            diff = [round(100 * v, 2) for v in paired_bootstrap([(mine, base)])]
            kept, below = check["passed"], diff[2] < 0
            confusion[f"{'kept' if kept else 'refused'}, {'below base' if below else 'not below base'}"] += 1
            print(json.dumps({"dataset": name, "split": args.split, "source": source, "queries": len(ids),
                              "base": round(100 * float(np.mean(list(base.values()))), 2),
                              "unlabelled": round(100 * float(np.mean(list(mine.values()))), 2),
                              "labelled": round(100 * float(np.mean(list(own.values()))), 2),
                              "unlabelled_minus_base": diff,
                              "unlabelled_minus_labelled": [round(100 * v, 2) for v in paired_bootstrap([(mine, own)])],
                              "self_check_gain": round(100 * check["gain"], 2),
                              "self_check_interval": [round(100 * v, 2) for v in check["interval"]],
                              "check_queries": check["check_queries"], "check_overlap": overlap,
                              "kept": kept}), flush=True)
            multi.remove(expert)
        multi.remove(f"labelled:{name}")
    print(json.dumps({"margin": args.margin, "confusion": dict(confusion)}))


def _check(info: dict, source: str, dataset, index, encode_base, encode_expert, margin: float) -> tuple[dict, int]:
    """``(today's self-check record, how many of its queries were left out as drawn for training)`` of a saved
    expert (``info``: its ``expert.json``); fewer than 2 left: refused with a zero gain."""
    from eval.data import Split
    from experts.pseudo import PseudoLabelled, corpus_queries
    from experts.workflows.unlabelled import PSEUDO_QUERIES, check_queries, self_check

    seed, record = info["training"]["hyperparameters"]["seed"], info.get("unlabelled", {})
    kind = "corpus" if source == "corpus" else "queries"
    checked = check_queries(dataset, kind, PSEUDO_QUERIES, seed).data
    trained = info["training"]["train_queries"] + info["training"]["heldout_queries"]
    drawn = corpus_queries(dataset, record.get("pseudo_queries", trained), seed).data.queries if kind == "corpus" \
        else {}
    ids = [q for q in checked.queries if q not in drawn]  # both named pseudo:<document id>
    if len(ids) < 2:
        return {"check_queries": len(ids), "gain": 0.0, "interval": [0.0, 0.0], "passed": False}, len(checked.queries)
    unseen = Split(checked.name, {q: checked.queries[q] for q in ids}, {q: checked.qrels[q] for q in ids})
    return self_check(PseudoLabelled(dataset, unseen), index, encode_base, encode_expert, margin), \
        len(checked.queries) - len(ids)


if __name__ == "__main__":
    main()
