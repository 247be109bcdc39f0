"""Search latency: routed search (RouterRetriever with a built router) against base-only search, same index.

Queries are test queries drawn round-robin from the given datasets (so they route to different experts);
they search one corpus index. Batch of 1: median over ``--single`` queries; batch of 256: median of
``--repeats`` batches. Usage::

    python benchmarks/latency.py --router DIR --index-dataset scifact --dataset scifact --dataset squad ...

Prints one JSON line per measurement.
"""

from __future__ import annotations

import json
import statistics
import time

import common


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--router", required=True)
    parser.add_argument("--routing", default="pilot")
    parser.add_argument("--index-dataset", default="scifact")
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--single", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from eval import open_dataset
    from retriever import FixedRouter, RouterRetriever, ensure_index

    routed = RouterRetriever.load(args.router, args.routing)
    base_only = RouterRetriever(routed.encoder, FixedRouter(routed.encoder.names, {"expert": "base"}))
    index = ensure_index(open_dataset(args.data_dir, args.index_dataset), routed.encoder.base, args.cache_dir)
    pools = [list(open_dataset(args.data_dir, d).split("test").queries.values()) for d in args.dataset]
    queries = [pools[i % len(pools)][i // len(pools) % len(pools[i % len(pools)])] for i in range(256)]

    for name, retriever in (("base-only", base_only), ("routed", routed)):
        retriever.search(queries[:8], k=10, index=index)  # warm-up
        single = []
        for q in queries[: args.single]:
            start = time.perf_counter()
            retriever.search([q], k=10, index=index)
            single.append(time.perf_counter() - start)
        batch = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            retriever.search(queries, k=10, index=index)
            batch.append(time.perf_counter() - start)
        print(json.dumps({"search": name, "batch_1_median_ms": round(1000 * statistics.median(single), 1),
                          "batch_256_median_s": round(statistics.median(batch), 2),
                          "batch_256_queries_per_s": round(256 / statistics.median(batch), 1),
                          "index": args.index_dataset, "index_docs": len(index)}))


if __name__ == "__main__":
    main()
