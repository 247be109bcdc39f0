"""Probe: does BM25 find this corpus's documents from a passage of them as well as the base does (no labels)?

Inverse-cloze pseudo-queries with the answer kept out of the text: for up to ``--queries`` documents of each
dataset (seed 0) that have a sentence of ``experts.pseudo.SENTENCE_WORDS`` words and other text besides, the
sentence is the query and the document is indexed *without* it (BM25 refitted over the changed corpus, the changed
documents re-encoded by the base), so neither system can match the copy and each must find the rest of the
document. Each system is scored by nDCG@10 of that one document. With ``--stress`` BM25's rankings are swapped as in
``probe_lexical_trust.py`` (``random:S``, ``neighbour:S``): a corpus where BM25 is confidently wrong.

Prints one JSON line per dataset and stress: base, bm25 and the hybrid at ``--weight`` (x100), the hybrid's gain
over the base with a paired-bootstrap 95% interval, and the mean ``top_agreement`` of the two rankings.
Usage: ``python benchmarks/probe_ict.py --cache-dir /work/cache``
"""

from __future__ import annotations

import json

import common
import numpy as np
from probe_lexical_trust import DATASETS, _stressed

DEPTH = 100


def ict_queries(dataset, count: int, seed: int = 0) -> tuple[dict, dict]:
    """``({doc id: query sentence}, {doc id: "title text" without it})`` for up to ``count`` documents."""
    from experts.pseudo import sentences

    docs = list(dataset.corpus())
    rng = np.random.default_rng(seed)
    queries, changed = {}, {}
    for row in rng.permutation(len(docs)):
        doc = docs[int(row)]
        options = sentences(doc.text)
        if not options:
            continue
        sentence = options[int(rng.integers(len(options)))]
        rest = doc.text.replace(sentence, " ", 1).strip()
        if len(rest.split()) < 5:
            continue
        queries[doc.id], changed[doc.id] = sentence, f"{doc.title} {rest}".strip()
        if len(queries) >= count:
            break
    return queries, changed


def rank(name, dataset, index, encoder, count: int) -> tuple[dict, dict, dict]:
    """The ICT queries' base and BM25 rankings over the changed corpus: ``(queries, dense, lexical)``."""
    from retriever.index.lexical import LexicalConfig, fit_bm25, tokenize

    queries, changed = ict_queries(dataset, count)
    doc_ids = list(index.doc_ids)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    texts = {doc.id: f"{doc.title} {doc.text}".strip() for doc in dataset.corpus()}
    texts.update(changed)
    vectors = index.index.reconstruct_n(0, len(doc_ids))
    vectors[[row_of[d] for d in changed]] = encoder.encode(list(changed.values()))
    qids = list(queries)
    q_vectors = encoder.encode([queries[q] for q in qids])
    scores = q_vectors @ vectors.T
    top = np.argsort(-scores, axis=1)[:, :DEPTH]
    dense = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}
    config = LexicalConfig()
    bm25 = fit_bm25([texts[d] for d in doc_ids], config)
    rows, values = bm25.retrieve(tokenize([queries[q] for q in qids], config), k=DEPTH, show_progress=False,
                                 return_as="tuple")
    lexical = {q: {doc_ids[int(r)]: float(s) for r, s in zip(rows[i], values[i], strict=True) if s > 0}
               for i, q in enumerate(qids)}
    print(json.dumps({"ranked": name, "queries": len(qids)}), flush=True)
    return queries, dense, lexical


def ndcg(results: dict) -> np.ndarray:
    """Per query, in ``results``' order, nDCG@10 of its one relevant document, the one whose id it has
    (``eval.per_query_ndcg``)."""
    from eval import per_query_ndcg

    scored = per_query_ndcg({q: {q: 1} for q in results}, results)
    return np.array([scored[q] for q in results])


def interval(mine: np.ndarray, base: np.ndarray) -> list[float]:
    """``[mean, low, high]`` of ``mine - base`` x100, paired-bootstrap 95% (``eval.paired_bootstrap``)."""
    from eval import paired_bootstrap

    ids = [str(i) for i in range(len(mine))]
    pair = (dict(zip(ids, mine, strict=True)), dict(zip(ids, base, strict=True)))
    return [round(100 * v, 2) for v in paired_bootstrap([pair])]


def main() -> None:
    from retriever import load_encoder
    from retriever.ranking.systems import fuse
    from retriever.ranking.unfamiliar import top_agreement

    parser = common.parser(__doc__)
    parser.add_argument("--dataset", action="append", default=[], help="[default: all 8 shared datasets]")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--weight", type=float, default=0.6)
    parser.add_argument("--stress", action="append", default=[],
                        help="[default: random:0.5, neighbour:0.5, neighbour:1.0]")
    args = parser.parse_args()
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, args.dataset or DATASETS, encoder)
    for name, dataset in opened.items():
        queries, dense, plain = rank(name, dataset, indexes[name], encoder, args.queries)
        for stress in ["none", *(args.stress or ["random:0.5", "neighbour:0.5", "neighbour:1.0"])]:
            lexical = _stressed(plain, indexes[name], stress)
            base, bm25 = ndcg({q: dense[q] for q in queries}), ndcg({q: lexical[q] for q in queries})
            mixed = ndcg({q: fuse(dense[q], lexical[q], args.weight, "convex", 10) for q in queries})
            gain, low, high = interval(mixed, base)
            agreement = [a for q in queries if (a := top_agreement(dense[q], lexical[q])) is not None]
            print(json.dumps({"dataset": name, "stress": stress, "queries": len(queries),
                              "base": round(100 * base.mean(), 1), "bm25": round(100 * bm25.mean(), 1),
                              "hybrid": round(100 * mixed.mean(), 1), "gain": gain, "ci": [low, high],
                              "agreement": round(float(np.mean(agreement)), 3)}), flush=True)


if __name__ == "__main__":
    main()
