"""Adding documents to a named index against rebuilding it: ``routerretriever add`` (``FaissBackend.add``) of 1% new
documents to an N-document synthetic collection, side by side with a fresh build of all N + 1%, for the dense index,
the BM25 index and the document store separately, with the store's size on disk and peak memory.

One process, one run: the rebuild of all N + 1% is timed first; the N-document index the add changes is that index
less the new documents (a delete, which encodes nothing), so the corpus is encoded once. The dense part of the add
is the change without BM25 (``change_index(lexical=False)``) less the store's part, timed on its own
(``DocStore.changed``); BM25 is the rebuild from the store a change runs (bm25s cannot update an index). Peak
memory: Python and numpy allocations per phase (``tracemalloc``), and the process's peak resident set.
Usage (default N=100000; scale down with ``--docs``)::

    python benchmarks/changes.py --docs 2000 [--model DIR] [--index-type flat] [--output-json changes.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import shutil
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from retriever.encoding.encoder import load_encoder
from retriever.index.base import Document, IndexConfig
from retriever.index.changes import change_index, rebuild_lexical
from retriever.index.faiss_index import build_index
from retriever.index.lexical import build_lexical_index, lexical_path_for
from retriever.storage.docstore import STORE_FILE, DocStore


class Docs:
    def __init__(self, docs):
        self.docs = docs

    def corpus(self):
        return iter(self.docs)


def synthetic(count: int, seed: int = 0) -> list[Document]:
    """Short documents over a 5000-word pseudo-vocabulary (Zipf-like word frequencies), seeded."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "su", "da", "gi"]
    vocabulary = ["".join(rng.choice(syllables, size=rng.integers(2, 4))) for _ in range(5000)]
    weights = 1 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    docs = []
    for i in range(count):
        words = rng.choice(vocabulary, size=int(rng.integers(12, 31)), p=weights)
        docs.append(Document(f"d{i}", " ".join(words[:2]).title(), " ".join(words[2:]) + "."))
    return docs


def timed(what: str, measures: dict, work):
    """Run ``work()``, recording its seconds and its peak of traced allocations (MiB) under ``what``."""
    tracemalloc.start()
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    measures[what] = {"seconds": round(seconds, 3), "peak_traced_mib": round(peak, 1)}
    return result


def run(args) -> dict:
    encoder = load_encoder(args.model, device=args.device)
    docs = synthetic(args.docs + max(1, round(args.docs * args.fraction)))
    new = docs[args.docs :]
    config = IndexConfig(index_type=args.index_type)
    m: dict = {}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        tmp = Path(tmp)
        timed("rebuild dense+store", m, lambda: build_index(docs, encoder, tmp / "fresh", config))
        timed("rebuild store", m, lambda: DocStore.write(tmp / "store-fresh.sqlite", docs))
        timed("rebuild bm25", m, lambda: build_lexical_index(Docs(docs), lexical_path_for(tmp / "fresh")))
        # the index the add changes: the fresh one less the new documents (a delete encodes nothing; not timed),
        # so the corpus is encoded once in the whole run
        shutil.copytree(tmp / "fresh", tmp / "named")
        shutil.copytree(lexical_path_for(tmp / "fresh"), lexical_path_for(tmp / "named"))
        change_index(tmp / "named", delete=[doc.id for doc in new])
        timed("add store", m, lambda: DocStore.changed(tmp / "named" / STORE_FILE, tmp / "store-added.sqlite", new))
        changed, _ = timed("add dense+store", m, lambda: change_index(tmp / "named", encoder, new, lexical=False))
        timed("add bm25", m, lambda: rebuild_lexical(changed))
        sizes = {"store_bytes": (tmp / "named" / STORE_FILE).stat().st_size,
                 "embeddings_bytes": (tmp / "named" / "embeddings.npy").stat().st_size}
    for kind in ("add", "rebuild"):  # the dense part: the dense and store step less the store's own time
        both = m[f"{kind} dense+store"]
        m[f"{kind} dense"] = {"seconds": round(both["seconds"] - m[f"{kind} store"]["seconds"], 3),
                              "peak_traced_mib": both["peak_traced_mib"]}
    rows = {part: {"add": m[f"add {part}"], "rebuild": m[f"rebuild {part}"],
                   "speedup": round(m[f"rebuild {part}"]["seconds"] / max(m[f"add {part}"]["seconds"], 1e-9), 1)}
            for part in ("dense", "bm25", "store")}
    return {"command": shlex.join([sys.executable, *sys.argv]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
            "python": platform.python_version(), "model": encoder.info.id, "index_type": args.index_type,
            "documents": args.docs, "added": len(new), "parts": rows, **sizes,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def table(report: dict) -> str:
    lines = [f"{report['documents']} documents + {report['added']} added ({report['index_type']}, {report['model']})",
             f"{'part':<7}{'add s':>10}{'rebuild s':>11}{'speedup':>9}{'add MiB':>9}{'rebuild MiB':>13}"]
    for part, row in report["parts"].items():
        lines.append(f"{part:<7}{row['add']['seconds']:>10.3f}{row['rebuild']['seconds']:>11.3f}"
                     f"{row['speedup']:>8.1f}x{row['add']['peak_traced_mib']:>9.1f}{row['rebuild']['peak_traced_mib']:>13.1f}")
    store = report["store_bytes"]
    lines.append(f"store {store / 2**20:.1f} MiB on disk ({store / (report['documents'] + report['added']):.0f} "
                 f"bytes/doc), embeddings {report['embeddings_bytes'] / 2**20:.1f} MiB, peak RSS "
                 f"{report['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000, help="documents in the collection [default: 100000]")
    parser.add_argument("--fraction", type=float, default=0.01, help="share of new documents added [default: 0.01]")
    parser.add_argument("--model", help="base model [default: the packaged all-MiniLM-L6-v2]")
    parser.add_argument("--device", help="encode on this torch device")
    parser.add_argument("--index-type", choices=["flat", "hnsw", "ivf"], default="flat")
    parser.add_argument("--work-dir", help="where the indexes are written (a temporary directory inside)")
    parser.add_argument("--output-json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = run(args)
    print(table(report))
    print(json.dumps(report))
    if args.output_json:
        args.output_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
