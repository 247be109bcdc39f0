"""Indexing throughput: ``routerretriever index`` against plain SentenceTransformer.encode + faiss.IndexFlatIP.add.

Both run in one process on the same corpus with the same loaded model, alternating, so the machine's state is
shared. Usage: ``python eval/bench_index.py --dataset scifact [--repeats 1]`` (data dir from
``--data-dir`` or ``$ROUTERRETRIEVER_DATA_DIR``). Prints one JSON line per measurement and a summary line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np


def plain_index(model, corpus_path: Path) -> faiss.Index:
    """What a user would write by hand: read everything, encode once, add to an exact inner-product index."""
    with gzip.open(corpus_path, "rt", encoding="utf-8") if corpus_path.suffix == ".gz" else open(corpus_path) as f:
        docs = [json.loads(line) for line in f if line.strip()]
    texts = [f"{d.get('title') or ''} {d['text']}".strip() for d in docs]
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.asarray(vectors, dtype=np.float32))
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from eval.data import open_dataset
    from retriever.encoder import load_encoder

    dataset = open_dataset(args.data_dir, args.dataset)
    encoder = load_encoder(device="cpu")
    n = sum(1 for _ in dataset.corpus())
    times = {"plain": [], "cli": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            start = time.perf_counter()
            plain_index(encoder.model, dataset.corpus_path)
            times["plain"].append(time.perf_counter() - start)
            cmd = [sys.executable, "-m", "cli", "-q", "index", "--data-dir", str(dataset.root.parent),
                   "--dataset", args.dataset, "--output", f"{tmp}/idx", "--overwrite"]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent)
            times["cli"].append(time.perf_counter() - start)
            for name in ("plain", "cli"):
                print(json.dumps({"repeat": repeat, "path": name, "seconds": round(times[name][-1], 2),
                                  "docs_per_s": round(n / times[name][-1], 2)}))
    best = {name: min(values) for name, values in times.items()}
    print(json.dumps({
        "dataset": args.dataset, "documents": n,
        "machine": f"{platform.machine()}, {faiss.omp_get_max_threads()} threads",
        "plain_docs_per_s": round(n / best["plain"], 2), "cli_docs_per_s": round(n / best["cli"], 2),
        "time_ratio_cli_over_plain": round(best["cli"] / best["plain"], 3),
        "note": "cli time includes process start, model load and writing the index directory",
    }))


if __name__ == "__main__":
    main()
