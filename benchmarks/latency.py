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
import time

import common


def round_robin(data_dir, names: list[str], n: int = 256) -> list[str]:
    """``n`` test queries drawn in turn from each dataset (so they route to different systems)."""
    from eval import open_dataset

    pools = [list(open_dataset(data_dir, d).split("test").queries.values()) for d in names]
    return [pools[i % len(pools)][i // len(pools) % len(pools[i % len(pools)])] for i in range(n)]


def time_searchers(searchers: dict, index, lexical, queries: list[str], single: int, repeats: int,
                   sync=lambda: None) -> dict[str, tuple[float, float]]:
    """``{name: (median seconds of a batch of 1, median seconds of the whole batch)}``, the searchers interleaved;
    ``sync`` waits for a device's queued work before each clock reading."""
    import statistics

    def run(searcher, batch):
        sync()
        start = time.perf_counter()
        searcher.search(batch, k=10, index=index, lexical=lexical)
        sync()
        return time.perf_counter() - start

    for searcher in searchers.values():
        run(searcher, queries[:8])  # warm-up
    ones = {name: [] for name in searchers}
    manys = {name: [] for name in searchers}
    for q in queries[:single]:
        for name, searcher in searchers.items():
            ones[name].append(run(searcher, [q]))
    for _ in range(repeats):
        for name, searcher in searchers.items():
            manys[name].append(run(searcher, queries))
    return {name: (statistics.median(ones[name]), statistics.median(manys[name])) for name in searchers}


def searchers(router: str, routing: str = "default", compare=(), device: str | None = None) -> dict:
    """``{"base-only": ..., "routed:<routing>": ..., "routed:<dir>": ...}``: base-only search through the routed
    searcher's own encoder, the router, and each compared router directory's default router."""
    from retriever import FixedRouter, RouterRetriever

    routed = RouterRetriever.load(router, routing, device=device)
    out = {"base-only": RouterRetriever(routed.encoder, FixedRouter(routed.encoder.names, {"expert": "base"})),
           f"routed:{routing}": routed}
    for other in compare:
        out[f"routed:{other}"] = RouterRetriever.load(other, device=device)
    return out


def indexes(args, name: str, encoder, device: str | None):
    """The dataset's cached dense index (searching on ``device``) and its BM25 index."""
    from eval import open_dataset
    from retriever import ensure_index, ensure_lexical_index

    dataset = open_dataset(args.data_dir, name)
    return ensure_index(dataset, encoder, args.cache_dir).to(device), ensure_lexical_index(dataset, args.cache_dir)


def report(medians: dict[str, tuple[float, float]], routed: str, extra: dict) -> None:
    """One JSON line per searcher, then the ratio lines against ``base-only``."""
    for name, (one, many) in medians.items():
        print(json.dumps({"search": name, "batch_1_median_ms": round(1000 * one, 1),
                          "batch_256_median_s": round(many, 3), "batch_256_queries_per_s": round(256 / many, 1),
                          **extra}))
    base_one, base_many = medians["base-only"]
    for name in [n for n in medians if n != "base-only"]:
        one, many = medians[name]
        label = "" if name == routed else f" ({name})"
        print(f"ratio batch1={one / base_one:.2f} batch256={many / base_many:.2f}{label}")


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
    parser.add_argument("--device", help="encode and search on this torch device (e.g. cuda)")
    args = parser.parse_args()

    timed = searchers(args.router, args.routing, args.compare_router, args.device)
    index, lexical = indexes(args, args.index_dataset, timed["base-only"].encoder.base, args.device)
    medians = time_searchers(timed, index, lexical, round_robin(args.data_dir, args.dataset), args.single,
                             args.repeats, common.synchronizer(args.device))
    report(medians, f"routed:{args.routing}", {"index": args.index_dataset, "index_docs": len(index),
                                               "device": args.device or "cpu"})


if __name__ == "__main__":
    main()
