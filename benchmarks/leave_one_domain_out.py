"""Leave one domain out, on test queries: each dataset routed as a new user's corpus would be.

For each left-out dataset D (default: all 8 shared datasets), everything fitted on D goes: D's expert (and every
system using it, its hybrid), D's routing data, and every calibration that saw it (the base hybrid's weight, the
novelty threshold and default system, the choice of the default router kind). The router kinds of ROUTER_DIR
(built by ``routerretriever benchmark`` or ``build-router``, so that the other datasets' experts and routing scores
are cached there) are fitted again on the other datasets' training queries with the saved fit options, the default
kind is chosen on their routing folds, and D's *test* queries are routed by it. Reported per left-out dataset: the
routed default against ``base``, ``bm25`` and ``hybrid:base`` (its weight calibrated without D), nDCG@10 x100 with
paired-bootstrap 95% intervals, how many queries were unfamiliar and where they went; then the mean over left-out
datasets and the worst case. ``--unfamiliar calibrated`` fits the routers as before 2026-12-04 instead (the default
system one global choice of base or hybrid:base), to compare on the same data.

Usage: ``python benchmarks/leave_one_domain_out.py ROUTER_DIR [--dataset D ...] [--json FILE]``
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import common

DATASETS = ["scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l", "squad",
            "aila2019-statutes"]


def main() -> None:
    from eval import open_dataset, paired_bootstrap
    from eval.runs import SplitRun
    from experts.routing import CALIBRATED_OPTIONS, best_router, cached_routing_data, expert_key
    from retriever import (
        UNFAMILIAR_POLICIES,
        FaissBackend,
        IndexConfig,
        MultiExpertEncoder,
        RouterDirectory,
        fit_router,
        load_encoder,
        without_expert,
    )

    parser = common.parser(__doc__)
    parser.add_argument("router_dir", type=Path)
    parser.add_argument("--dataset", action="append", default=[], help="left out in turn (repeatable)")
    parser.add_argument("--unfamiliar", action="append", default=[], choices=UNFAMILIAR_POLICIES,
                        help="where unfamiliar queries go (repeatable: each is fitted and reported) [default: auto]")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    encoder = MultiExpertEncoder(load_encoder())
    store = RouterDirectory(args.router_dir, encoder.info)
    store.load_into(encoder, sorted(set(store.domain_experts().values())))
    kinds = store.built_routers()
    saved = {kind: store.load_router(kind) for kind in kinds}
    info = saved[kinds[0]].info
    backend = FaissBackend(args.cache_dir)
    keys = {name: expert_key(store, name) for name in encoder.names}
    rows = []
    for left in args.dataset or DATASETS:
        kept = [d for d in info["datasets"] if d != left]
        data = cached_routing_data(store, kept, {d: info["lexical_keys"][d] for d in kept}, info.get("fusion",
                                                                                                    "convex"))
        if left in store.domain_experts():
            data = without_expert(data, store.domain_experts()[left])
        dataset = open_dataset(args.data_dir, left)
        index, lexical = backend.ensure(dataset, encoder.base, IndexConfig(), lexical=True)
        run = SplitRun(dataset, "test", encoder, index, {}, data.systems, Path(args.cache_dir) / "query-vectors",
                       keys, lexical, data.fusion)
        singles = {s: run.fixed(s) for s in ("base", "bm25", "hybrid:base")}
        for policy in args.unfamiliar or [UNFAMILIAR_POLICIES[0]]:
            routers = {}
            for kind, router in saved.items():
                options = {k: v for k, v in router.options.items() if k not in CALIBRATED_OPTIONS}
                routers[kind] = fit_router(kind, data, **{**options, "unfamiliar": policy})
            default = best_router({kind: router.fold_gain["mean"] for kind, router in routers.items()})
            run.routers = routers
            routed = run.routed(default)
            mine = routed.scores.per_query_ndcg_at_10
            row = {"left_out": left, "router": default, "unfamiliar_policy": policy,
                   "default_system": routers[default].default, "queries": len(mine),
                   "routed": round(100 * routed.scores.ndcg_at_10, 2),
                   "hybrid_weight": data.fusion.weight("hybrid:base"),
                   "unfamiliar": len(routed.unfamiliar), "systems": dict(Counter(routed.chosen.values())),
                   "unfamiliar_to": dict(Counter(routed.chosen[q] for q in routed.unfamiliar))}
            for name, single in singles.items():
                diff, low, high = paired_bootstrap([(mine, single.scores.per_query_ndcg_at_10)])
                row[name] = round(100 * single.scores.ndcg_at_10, 2)
                row[f"minus_{name}"] = [round(100 * diff, 2), round(100 * low, 2), round(100 * high, 2)]
            rows.append(row)
            print(json.dumps(row), flush=True)
    for policy in dict.fromkeys(r["unfamiliar_policy"] for r in rows):
        mine = [r for r in rows if r["unfamiliar_policy"] == policy]
        print(json.dumps({"unfamiliar_policy": policy, **common.left_out_summary(mine)}), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
