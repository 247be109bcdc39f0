"""Exact top-10 search: FAISS IndexFlatIP on the CPU against CorpusIndex's torch path on a device.

Usage: ``python benchmarks/gpu_search.py [--device cuda] [--docs 100000 1000000] [--queries 1000]``. Random unit
vectors (384-d, like MiniLM); each query is a perturbed document. Prints one JSON line per corpus size with
both timings (the device side after one warm-up call, synchronised) and the share of identical result rows.
"""

from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np
import torch

from retriever import CorpusIndex, IndexConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in args.docs:
        docs = rng.standard_normal((n, args.dim), dtype=np.float32)
        docs /= np.linalg.norm(docs, axis=1, keepdims=True)
        queries = docs[: args.queries] + 0.1 * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(docs)
        index = CorpusIndex(None, {"dim": args.dim, "config": IndexConfig().to_json()}, [str(i) for i in range(n)],
                            docs, flat)
        start = time.perf_counter()
        _, cpu_rows = index.search(queries, 10)
        cpu = time.perf_counter() - start
        index.to(args.device).search(queries[:8], 10)  # warm-up: kernels, allocator
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        sync()
        start = time.perf_counter()
        _, device_rows = index.search(queries, 10)
        sync()
        on_device = time.perf_counter() - start
        print(json.dumps({"docs": n, "queries": args.queries, "faiss_cpu_threads": faiss.omp_get_max_threads(),
                          "faiss_cpu_s": round(cpu, 4), f"torch_{args.device}_s": round(on_device, 4),
                          "same_rows": round(float((cpu_rows == device_rows).mean()), 5)}), flush=True)


if __name__ == "__main__":
    main()
