"""The GPU path on one device, in one run: corpus encoding, exact search over many vectors, routed vs base latency.

Usage (on the accelerator; every part also runs on the CPU at small sizes)::

    python benchmarks/gpu_path.py --data-dir DIR --router ROUTER_DIR --device cuda \\
        [--dataset scifact] [--docs 50000] [--vectors 1000000] [--queries 100000]

1. **Encode**: real passages of the dataset whose tokenised length (truncated at the model's 256) is at least
   ``--min-tokens``, repeated to ``--docs`` texts: sentence-transformers' own ``encode`` (fp32, its defaults but
   ``--batch-size``) against ``Encoder`` in bf16 and fp16 (tokenised once, sorted by length, autocast), docs/s
   each, and the smallest cosine of each precision's vectors to fp32's.
2. **Search**: ``--vectors`` random unit vectors (the model's dimension), ``--queries`` perturbed documents, exact
   top 10 through ``CorpusIndex.to(device)`` (FAISS's GPU index where the installed FAISS has one, torch
   otherwise), queries/s after a warm-up.
3. **Latency**: ``benchmarks/latency.py``'s measurement on the device (test queries round-robin from
   ``--latency-dataset``, base-only and routed interleaved) and its ``ratio`` line.

Prints one JSON line per measurement.
"""

from __future__ import annotations

import json
import time

import common
import numpy as np
from latency import indexes, report, round_robin, searchers, time_searchers

EXPERT_DATASETS = ("scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l", "squad")


def passages(data_dir, dataset: str, tokenizer, min_tokens: int, max_tokens: int, docs: int) -> tuple[list, float]:
    """``docs`` passages of at least ``min_tokens`` tokens (repeated in order when the corpus has fewer) and
    their mean token count after truncation."""
    from eval import open_dataset

    long, counts = [], []
    for doc in open_dataset(data_dir, dataset).corpus():
        n = len(tokenizer(doc.content(), truncation=True, max_length=max_tokens)["input_ids"])
        if n >= min_tokens:
            long.append(doc.content())
            counts.append(n)
        if len(long) >= docs:
            break
    if not long:
        raise SystemExit(f"no passage of {dataset} has {min_tokens} tokens or more")
    picked = [long[i % len(long)] for i in range(docs)]
    return picked, float(np.mean([counts[i % len(counts)] for i in range(docs)]))


def encode_part(args, sync) -> None:
    from retriever import load_encoder

    fp32 = load_encoder(device=args.device)
    st = fp32.model
    texts, tokens = passages(args.data_dir, args.dataset, st.tokenizer, args.min_tokens, st.max_seq_length,
                             args.docs)
    st.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    sync()
    start = time.perf_counter()
    reference = st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    sync()
    seconds = time.perf_counter() - start
    print(json.dumps({"part": "encode", "path": "sentence-transformers encode (fp32)", "docs": len(texts),
                      "mean_tokens": round(tokens, 1), "batch_size": args.batch_size,
                      "docs_per_s": round(len(texts) / seconds, 1), "device": args.device}), flush=True)
    for precision in ("bf16", "fp16"):
        fast = load_encoder(device=args.device, precision=precision)
        fast.encode(texts[: args.batch_size], batch_size=args.batch_size)
        sync()
        start = time.perf_counter()
        vectors = fast.encode(texts, batch_size=args.batch_size)
        sync()
        seconds = time.perf_counter() - start
        print(json.dumps({"part": "encode", "path": f"Encoder {precision} autocast", "docs": len(texts),
                          "mean_tokens": round(tokens, 1), "batch_size": args.batch_size,
                          "docs_per_s": round(len(texts) / seconds, 1),
                          "min_cosine_to_fp32": round(float((vectors * reference).sum(axis=1).min()), 6),
                          "device": args.device}), flush=True)


def search_part(args, sync) -> None:
    import faiss

    from retriever import CorpusIndex, IndexConfig, faiss_gpus

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((args.vectors, args.dim), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    picks = rng.integers(0, args.vectors, args.queries)
    queries = (docs[picks] + 0.1 * rng.standard_normal((args.queries, args.dim), dtype=np.float32)).astype(np.float32)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(docs)
    index = CorpusIndex(None, {"dim": args.dim, "config": IndexConfig().to_json()},
                        [str(i) for i in range(args.vectors)], docs, flat)
    index.to(args.device)
    index.search(queries[:1024], 10)  # warm-up
    sync()
    start = time.perf_counter()
    _, rows = index.search(queries, 10)
    sync()
    seconds = time.perf_counter() - start
    print(json.dumps({"part": "search", "vectors": args.vectors, "dim": args.dim, "queries": args.queries, "k": 10,
                      "engine": index.engine,
                      "faiss_gpus": faiss_gpus(), "queries_per_s": round(args.queries / seconds, 1),
                      "self_hit_at_1": round(float((rows[:, 0] == picks).mean()), 4), "device": args.device}),
          flush=True)


def latency_part(args, sync) -> None:
    timed = searchers(args.router, device=args.device)
    index, lexical = indexes(args, args.latency_index, timed["base-only"].encoder.base, args.device)
    medians = time_searchers(timed, index, lexical, round_robin(args.data_dir, args.latency_dataset),
                             args.single, args.repeats, sync)
    report(medians, "routed:default", {"part": "latency", "index": args.latency_index, "device": args.device})


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dataset", default="scifact", help="passages to encode")
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--min-tokens", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--router", help="a built router directory (part 3 is skipped without one)")
    parser.add_argument("--latency-index", default="scifact")
    parser.add_argument("--latency-dataset", action="append", default=None,
                        help="datasets the latency queries come from (repeatable) [default: the seven expert "
                             "datasets of BENCHMARKS.md]")
    parser.add_argument("--single", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="encode,search,latency")
    args = parser.parse_args()
    sync = common.synchronizer(args.device)
    parts = set(args.parts.split(","))
    if "encode" in parts:
        encode_part(args, sync)
    if "search" in parts:
        search_part(args, sync)
    if "latency" in parts and args.router:
        args.latency_dataset = args.latency_dataset or list(EXPERT_DATASETS)
        latency_part(args, sync)


if __name__ == "__main__":
    main()
