"""Past one machine: corpus encoding on Ray against the local encoder, and Milvus Lite search against FAISS.

1. Encoding (``--encode-dataset``, default pubmedqa-l): the local encoder in this process, and ``RayEncoder``
   with 1 and 2 workers (one CPU each) on a local Ray cluster, on the same corpus in one run; the order rotates
   between repeats and the best time counts. Model loading is excluded (each encoder is warmed up on one block
   first) and reported apart. Ends with docs/s per configuration, per-worker throughput and, from it, what a
   10M-passage corpus costs on N machines.
2. Search (``--search-dataset``, default scifact): the cached FAISS index's vectors also written to Milvus Lite
   collections (flat, hnsw, ivf; the same vectors, so only search differs), test queries at batch 1 and 256:
   milliseconds per batch and recall@10 against exact FAISS; BM25 from bm25s against Milvus's sparse search.

Usage: ``python benchmarks/scale_out.py [--repeats 3] [--milvus-dir DIR]``. Prints JSON lines, then a summary.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time

import common
import numpy as np


class Precomputed:
    """An encoder that hands out an index's stored vectors in corpus order (``build_milvus_index`` input)."""

    def __init__(self, index):
        self.index, self.info, self.dim, self.row = index, None, index.dim, 0

    def encode(self, texts, progress=None):
        vectors = np.asarray(self.index.embeddings[self.row : self.row + len(texts)])
        self.row += len(texts)
        return vectors


def encoding(args, texts) -> dict:
    import ray

    from retriever import load_encoder
    from retriever.index.ray_encoder import RayEncoder

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    names = ["local", "ray-1", "ray-2"]
    best = {name: float("inf") for name in names}
    startup = {}
    for repeat in range(args.repeats):
        for name in names[repeat % 3:] + names[: repeat % 3]:
            start = time.perf_counter()
            encoder = load_encoder() if name == "local" else RayEncoder(workers=int(name[-1]))
            encoder.encode(texts[:64])  # warm-up
            startup[name] = round(time.perf_counter() - start, 2)
            start = time.perf_counter()
            encoder.encode(texts)
            seconds = time.perf_counter() - start
            best[name] = min(best[name], seconds)
            if name != "local":
                encoder.close()
            print(json.dumps({"part": "encode", "repeat": repeat, "encoder": name, "seconds": round(seconds, 2),
                              "docs_per_s": round(len(texts) / seconds, 2), "startup_s": startup[name]}), flush=True)
    ray.shutdown()
    return {name: len(texts) / seconds for name, seconds in best.items()}


def _timed(fn, batches, repeats: int) -> float:
    """Median milliseconds per batch over ``repeats`` passes of ``batches``."""
    times = []
    for _ in range(repeats):
        for batch in batches:
            start = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def search_part(args, milvus_dir) -> list[dict]:
    from eval import open_dataset
    from retriever import IndexConfig, ensure_index, load_encoder
    from retriever.index.lexical import LexicalConfig, ensure_lexical_index
    from retriever.index.milvus import build_milvus_index

    encoder = load_encoder()
    dataset = open_dataset(args.data_dir, args.search_dataset)
    faiss_index = ensure_index(dataset, encoder, args.cache_dir)
    bm25 = ensure_lexical_index(dataset, args.cache_dir)
    split = dataset.split("test")
    texts = list(split.queries.values())
    texts = (texts * (256 // len(texts) + 1))[:max(256, len(texts))]
    vectors = encoder.encode(texts)
    exact = faiss_index.search(vectors, 10)[1]
    rows = []
    for kind in ("flat", "hnsw", "ivf"):
        source = Precomputed(faiss_index)
        source.info = encoder.info
        start = time.perf_counter()
        milvus = build_milvus_index(dataset, source, f"{milvus_dir}/search.db", f"bench_{kind}",
                                    IndexConfig(index_type=kind), LexicalConfig() if kind == "flat" else None,
                                    overwrite=True)
        built = time.perf_counter() - start
        faiss_kind = faiss_index if kind == "flat" else ensure_index(dataset, encoder, args.cache_dir,
                                                                     IndexConfig(index_type=kind))
        for label, index in (("faiss", faiss_kind), ("milvus", milvus)):
            found = index.search(vectors, 10)[1]
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))
            row = {"part": "search", "index": kind, "backend": label,
                   "ms_batch1": round(_timed(lambda b, i=index: i.search(b, 10), [vectors[i : i + 1]
                                             for i in range(100)], 1), 3),
                   "ms_batch256": round(_timed(lambda b, i=index: i.search(b, 10), [vectors[:256]], args.repeats),
                                        2),
                   "recall@10_vs_exact": round(recall, 4)}
            if label == "milvus":
                row["build_s"] = round(built, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if kind == "flat":
            lexical = milvus.lexical()
            want, got = bm25.search(texts, 10)[1], lexical.search(texts, 10)[1]
            same = float(np.mean([list(a) == list(b) for a, b in zip(want, got, strict=True)]))
            for label, index in (("bm25s", bm25), ("milvus", lexical)):
                row = {"part": "bm25", "backend": label,
                       "ms_batch1": round(_timed(lambda b, i=index: i.search(b, 10), [texts[i : i + 1]
                                                 for i in range(100)], 1), 3),
                       "ms_batch256": round(_timed(lambda b, i=index: i.search(b, 10), [texts[:256]],
                                                   args.repeats), 2),
                       "same_top10_as_bm25s": round(same, 4)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--encode-dataset", default="pubmedqa-l")
    parser.add_argument("--search-dataset", default="scifact")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--milvus-dir", help="where the Milvus Lite file goes [default: a temporary directory]")
    parser.add_argument("--skip-encode", action="store_true")
    args = parser.parse_args()

    from eval import open_dataset

    print(json.dumps({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                      "date": time.strftime("%Y-%m-%d")}))
    with tempfile.TemporaryDirectory() as tmp:
        search_part(args, args.milvus_dir or tmp)
    if args.skip_encode:
        return
    texts = [d.content() for d in open_dataset(args.data_dir, args.encode_dataset).corpus()]
    words = statistics.mean(len(t.split()) for t in texts)
    rates = encoding(args, texts)
    per_worker = rates["ray-1"]
    print(f"encode {args.encode_dataset}: {len(texts)} docs, {words:.0f} words each on average: " +
          ", ".join(f"{name} {rate:.1f} docs/s" for name, rate in rates.items()) +
          f"; ray-2/local {rates['ray-2'] / rates['local']:.2f}, ray-2/ray-1 {rates['ray-2'] / rates['ray-1']:.2f}")
    for machines in (1, 10, 100):
        hours = 10_000_000 / (per_worker * 2 * machines) / 3600
        print(f"10M passages on {machines} machine(s) of 2 such workers: {hours:,.1f} h")


if __name__ == "__main__":
    main()
