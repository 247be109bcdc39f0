"""Leave one domain out, then give it back without judgments (issue #27), on test queries.

For each left-out dataset D (default: all 8 shared datasets) a new router directory under ``--work`` gets ROUTER_DIR's
experts but D's (its labelled expert goes) and ROUTER_DIR's cached routing scores of the other datasets, plus D's
unlabelled expert from ``--unlabelled`` (a router directory whose expert for domain D was trained with
``train-expert --unlabelled``; none if it has none). Then, as a user with a new corpus would:
``build-router --dataset <the others> --unlabelled-dataset D`` (every router kind, default options): the routers
learn D from pseudo-queries of its corpus, its queries' BM25 decided at search time (``auto:`` systems). D's test
queries are routed by the default router; reported against ``base``, ``bm25`` and ``hybrid:base`` (weight calibrated
without D), nDCG@10 x100 with paired-bootstrap 95% intervals, and where the queries went. Compare with the same
datasets left out and routed as unfamiliar (``leave_one_domain_out.py``, BENCHMARKS.md section 4c).

Usage: ``python benchmarks/unlabelled_domains.py ROUTER_DIR --unlabelled DIR --work DIR [--dataset D ...]
[--json FILE]``
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import common

DATASETS = ["scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l", "squad",
            "aila2019-statutes"]


def main() -> None:
    from eval import open_dataset, paired_bootstrap
    from eval.runs import ROUTED, SplitRun
    from experts import build_routers, expert_key
    from retriever import FaissBackend, IndexConfig, MultiExpertEncoder, RouterDirectory, load_encoder
    from retriever.ranking.systems import system_names

    parser = common.parser(__doc__)
    parser.add_argument("router_dir", type=Path, help="labelled experts and routers (BENCHMARKS.md section 4b)")
    parser.add_argument("--unlabelled", type=Path, required=True, help="router directory with unlabelled experts")
    parser.add_argument("--work", type=Path, required=True, help="one router directory per left-out dataset here")
    parser.add_argument("--dataset", action="append", default=[], help="left out in turn (repeatable)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    base = load_encoder()
    source = RouterDirectory(args.router_dir, base.info)
    unlabelled = RouterDirectory(args.unlabelled, base.info)
    info = source.load_router(source.built_routers()[0]).info
    backend = FaissBackend(args.cache_dir)
    rows = []
    for left in args.dataset or DATASETS:
        kept = [d for d in info["datasets"] if d != left]
        work = args.work / left
        if not work.exists():
            (work / "experts").mkdir(parents=True)
            shutil.copy(source.root / "router.json", work / "router.json")
            for dataset, expert in source.domain_experts().items():
                if dataset != left:
                    shutil.copytree(source.expert_path(expert), work / "experts" / expert)
            for dataset in kept:
                shutil.copytree(source.routing_data_path(dataset), work / "routing-data" / dataset)
            own = unlabelled.domain_experts().get(left)
            if own is not None:
                shutil.copytree(unlabelled.expert_path(own), work / "experts" / own)
        _, default = build_routers(work, args.data_dir, args.cache_dir, kept, list(ROUTED), info["max_queries"],
                                   unlabelled=[left])
        store = RouterDirectory(work, base.info)
        encoder = store.load_into(MultiExpertEncoder(base))
        dataset = open_dataset(args.data_dir, left)
        index, lexical = backend.ensure(dataset, base, IndexConfig(), lexical=True)
        routers = {kind: store.load_router(kind) for kind in store.built_routers()}
        keys = {name: expert_key(store, name) for name in encoder.names}
        run = SplitRun(dataset, "test", encoder, index, routers, system_names(store.candidates()),
                       Path(args.cache_dir) / "query-vectors", keys, lexical, store.load_fusion())
        routed = run.routed(default)
        mine = routed.scores.per_query_ndcg_at_10
        expert = store.domain_experts().get(left)
        row = {"left_out": left, "unlabelled_expert": expert, "router": default, "queries": len(mine),
               "routed": round(100 * routed.scores.ndcg_at_10, 2),
               "hybrid_weight": store.load_fusion().weight("hybrid:base"),
               "unfamiliar": len(routed.unfamiliar), "systems": dict(Counter(routed.chosen.values()))}
        singles = ["base", "bm25", "hybrid:base", *([expert] if expert else [])]
        for name in singles:
            single = run.fixed(name)
            diff, low, high = paired_bootstrap([(mine, single.scores.per_query_ndcg_at_10)])
            label = "unlabelled_expert_alone" if name == expert else name
            row[label] = round(100 * single.scores.ndcg_at_10, 2)
            row[f"minus_{label}"] = [round(100 * diff, 2), round(100 * low, 2), round(100 * high, 2)]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps(common.left_out_summary(rows)), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
