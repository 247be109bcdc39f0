"""Search latency: routed search (RouterRetriever with a built router) against base-only search, same index.

Queries are test queries drawn round-robin from the given datasets (so they route to different systems); they
search one corpus index (and its BM25 index, for routers that may choose BM25 or a hybrid). The searchers are
interleaved, one call each in turn, so that drift in the machine's speed hits them alike: batch of 1, the
median over ``--single`` queries; batch of 256, the median of ``--repeats`` batches. ``--routing`` may be given
more than once (e.g. a dense-only router and a router over every system, built in two router directories with
``--compare-router``). Usage::

    python benchmarks/latency.py --router DIR --index-dataset scifact --dataset scifact --dataset squad ...

Prints one JSON line per searcher, then ``ratio batch1=<routed/base> batch256=<routed/base>`` for the first
routed searcher (and one ratio line per further one).
"""

from __future__ import annotations

import json
import statistics
import time

import common


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--router", required=True)
    parser.add_argument("--routing", default="default", help="the built router to time [default: the default]")
    parser.add_argument("--compare-router", action="append", default=[], metavar="DIR",
                        help="another router directory's default router, timed alongside (repeatable)")
    parser.add_argument("--index-dataset", default="scifact")
    parser.add_argument("--dataset", action="append", required=True)
    parser.add_argument("--single", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from eval import open_dataset
    from retriever import FixedRouter, RouterRetriever, ensure_index, ensure_lexical_index

    routed = RouterRetriever.load(args.router, args.routing)
    searchers = {"base-only": RouterRetriever(routed.encoder, FixedRouter(routed.encoder.names, {"expert": "base"})),
                 f"routed:{args.routing}": routed}
    for other in args.compare_router:
        searchers[f"routed:{other}"] = RouterRetriever.load(other)
    dataset = open_dataset(args.data_dir, args.index_dataset)
    index = ensure_index(dataset, routed.encoder.base, args.cache_dir)
    lexical = ensure_lexical_index(dataset, args.cache_dir)
    pools = [list(open_dataset(args.data_dir, d).split("test").queries.values()) for d in args.dataset]
    queries = [pools[i % len(pools)][i // len(pools) % len(pools[i % len(pools)])] for i in range(256)]

    def run(searcher, batch):
        start = time.perf_counter()
        searcher.search(batch, k=10, index=index, lexical=lexical)
        return time.perf_counter() - start

    for searcher in searchers.values():
        run(searcher, queries[:8])  # warm-up
    single = {name: [] for name in searchers}
    batch = {name: [] for name in searchers}
    for q in queries[: args.single]:
        for name, searcher in searchers.items():
            single[name].append(run(searcher, [q]))
    for _ in range(args.repeats):
        for name, searcher in searchers.items():
            batch[name].append(run(searcher, queries))
    medians = {name: (statistics.median(single[name]), statistics.median(batch[name])) for name in searchers}
    for name, (one, many) in medians.items():
        print(json.dumps({"search": name, "batch_1_median_ms": round(1000 * one, 1),
                          "batch_256_median_s": round(many, 3), "batch_256_queries_per_s": round(256 / many, 1),
                          "index": args.index_dataset, "index_docs": len(index)}))
    base_one, base_many = medians["base-only"]
    for name in list(searchers)[1:]:
        one, many = medians[name]
        label = "" if name == f"routed:{args.routing}" else f" ({name})"
        print(f"ratio batch1={one / base_one:.2f} batch256={many / base_many:.2f}{label}")


if __name__ == "__main__":
    main()
