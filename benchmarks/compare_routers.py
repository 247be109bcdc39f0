"""Two router directories' routers over the same experts, on the same test queries: nDCG@10 of each and the
paired-bootstrap 95% interval of the difference, per dataset and over the datasets (stratified).

For comparing what the routers were built from (e.g. ``--route-on prefix`` against ``--route-on embeddings``)
after both were built and evaluated by ``routerretriever benchmark`` (the query vectors it cached are reused).

Usage: ``python benchmarks/compare_routers.py DIR_A DIR_B [--router default] --dataset D [--dataset D ...]``
"""

from __future__ import annotations

import json
from pathlib import Path

import common


def main() -> None:
    from eval import SplitRun, open_dataset, paired_bootstrap
    from experts import expert_key
    from retriever import MultiExpertEncoder, RouterDirectory, ensure_index, ensure_lexical_index, load_encoder
    from retriever.ranking.systems import system_names

    parser = common.parser(__doc__)
    parser.add_argument("dir_a", type=Path)
    parser.add_argument("dir_b", type=Path)
    parser.add_argument("--router", default="default", help="the built router of each directory to compare")
    parser.add_argument("--dataset", action="append", required=True)
    args = parser.parse_args()
    encoder = MultiExpertEncoder(load_encoder())
    stores = [RouterDirectory(d, encoder.info) for d in (args.dir_a, args.dir_b)]
    keys = [{name: expert_key(store, name) for name in store.expert_names()} for store in stores]
    if keys[0] != keys[1]:
        raise SystemExit("the two router directories hold different experts; compare routers over the same ones")
    stores[0].load_into(encoder)
    routers = {str(i): store.load_router(store.default_router() if args.router == "default" else args.router)
               for i, store in enumerate(stores)}
    expert_keys = {name: expert_key(stores[0], name) for name in encoder.names}
    pairs = []
    for name in args.dataset:
        dataset = open_dataset(args.data_dir, name)
        run = SplitRun(dataset, "test", encoder, ensure_index(dataset, encoder.base, args.cache_dir), routers,
                       system_names(stores[0].candidates()), vector_cache=Path(args.cache_dir) / "query-vectors",
                       expert_keys=expert_keys, lexical=ensure_lexical_index(dataset, args.cache_dir),
                       fusion=stores[0].load_fusion())
        a, b = (run.routed(key).scores.per_query_ndcg_at_10 for key in ("0", "1"))
        pairs.append((a, b))
        diff, low, high = paired_bootstrap([(a, b)])
        print(json.dumps({"dataset": name, "a": round(100 * sum(a.values()) / len(a), 2),
                          "b": round(100 * sum(b.values()) / len(b), 2), "a_minus_b": round(100 * diff, 2),
                          "ci95": [round(100 * low, 2), round(100 * high, 2)]}), flush=True)
    diff, low, high = paired_bootstrap(pairs)
    print(json.dumps({"datasets": args.dataset, "router_a": f"{args.dir_a}:{routers['0'].name}",
                      "router_b": f"{args.dir_b}:{routers['1'].name}", "a_minus_b_mean": round(100 * diff, 2),
                      "ci95": [round(100 * low, 2), round(100 * high, 2)]}))


if __name__ == "__main__":
    main()
