"""Probe: choose each query's dense/BM25 fusion weight from post-retrieval signals (MoR-style), training queries only.

The routers choose a system from the query's base vector alone. Mixture-of-retrievers work (MoR, 2025) and query
performance prediction weigh lexical against dense retrieval per query from what the two rankings look like
(their top scores and gaps, how much they agree). This probe asks whether that signal beats the query vector at
the one choice it is about: how lexical a query's ranking should be (the dense weight ``w`` of ``hybrid:base``,
0 = BM25 alone, 1 = the base alone).

For each expert dataset's training queries (the routing sample: at most 500, seed 0) it ranks with the base model
and BM25 (top 100 each) and scores every fusion weight 0, 0.1, ..., 1 by per-query nDCG@10. Choosers, fitted on
one part of the queries and scored on the rest (the routing folds' two settings: two in-domain folds, and each
dataset left out in turn); each predicts, for every weight, the query's nDCG gain over the fold's best fixed
weight, and takes the best:

- ``fixed``: the one weight best on the fit rows (``hybrid:base`` as calibrated);
- ``dataset``: each dataset's best weight on its fit rows (known dataset; left out: ``fixed``);
- ``vector``: ridge regression on the base query vector (what a router sees);
- ``linear``: ridge regression on the standardised signals and their squares (a model a router could keep as JSON);
- ``signals``: gradient-boosted trees on a dozen post-retrieval signals;
- ``both``: trees on the signals and the vector's first 16 principal components;
- ``oracle``: the best weight per query (the ceiling).

Prints one JSON line per chooser: mean nDCG@10 gain (x100) over ``fixed`` per setting (mean over datasets), with
its paired-bootstrap 95% interval (queries resampled within each dataset).

Usage: ``python benchmarks/probe_qpp.py [--cache FILE]``
"""

from __future__ import annotations

import json
from pathlib import Path

import common
import numpy as np

DATASETS = ["scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l", "squad"]
WEIGHTS = np.round(np.arange(0.0, 1.0001, 0.1), 1)
DEPTH = 100


def signals(dense: dict[str, float], lexical: dict[str, float], text: str) -> list[float]:
    """Post-retrieval signals of one query's two rankings (best first)."""
    d = np.array(list(dense.values()) + [0.0] * (DEPTH - len(dense)))[:DEPTH]
    b = np.array(list(lexical.values()) + [0.0] * (DEPTH - len(lexical)))[:DEPTH]
    d_top, b_top = list(dense)[:10], list(lexical)[:10]
    d_rank = {doc: r for r, doc in enumerate(dense)}
    b_rank = {doc: r for r, doc in enumerate(lexical)}
    top_b = max(b[0], 1e-9)
    return [
        d[0], d[0] - d[1], d[0] - d[9], d[:10].std(),
        np.log1p(b[0]), (b[0] - b[1]) / top_b, (b[0] - b[9]) / top_b, len(lexical) / DEPTH,
        len(set(d_top) & set(b_top)) / 10,
        d_rank.get(b_top[0], DEPTH) / DEPTH if b_top else 1.0,
        b_rank.get(d_top[0], DEPTH) / DEPTH,
        np.log1p(len(text.split())),
    ]


def collect(args) -> dict:
    from eval import per_query_ndcg
    from experts import routing_sample
    from retriever import ensure_lexical_index, load_encoder, search, search_lexical
    from retriever.ranking.systems import fuse

    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, DATASETS, encoder)
    out = {"dataset": [], "vectors": [], "signals": [], "scores": []}
    for name in DATASETS:
        index = indexes[name]
        lexical = ensure_lexical_index(opened[name], args.cache_dir)
        qids, texts, qrels = routing_sample(opened[name], index)
        vectors = encoder.encode(texts)
        dense = search(index, vectors, qids, k=DEPTH)
        lex = search_lexical(lexical, texts, qids, DEPTH)
        per_weight = []
        for w in WEIGHTS:
            fused = {q: fuse(dense[q], lex[q], float(w), "convex", DEPTH) for q in qids}
            ndcg = per_query_ndcg(qrels, fused)
            per_weight.append([ndcg[q] for q in qids])
        out["dataset"] += [name] * len(qids)
        out["vectors"] += vectors.tolist()
        out["signals"] += [signals(dense[q], lex[q], t) for q, t in zip(qids, texts, strict=True)]
        out["scores"] += np.array(per_weight).T.tolist()
        print(json.dumps({"ranked": name, "queries": len(qids)}), flush=True)
    return out


def splits(datasets: np.ndarray):
    folds = np.arange(len(datasets)) % 2
    for k in (0, 1):
        yield "in-domain", folds != k, folds == k
    for name in DATASETS:
        yield "left out", datasets != name, datasets == name


def choose(kind: str, fit: np.ndarray, held: np.ndarray, x_vec, x_sig, scores, datasets) -> np.ndarray:
    """Per held-out row, the column (weight) the chooser picks."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge

    fixed = int(np.argmax(scores[fit].mean(axis=0)))
    if kind == "fixed":
        return np.full(held.sum(), fixed)
    if kind == "oracle":
        return np.argmax(scores[held], axis=1)
    if kind == "dataset":  # each dataset's best weight on its fit rows (a dataset without fit rows: fixed)
        names = np.asarray(datasets)
        best = {d: int(np.argmax(scores[fit & (names == d)].mean(axis=0))) for d in np.unique(names[fit])}
        return np.array([best.get(d, fixed) for d in names[held]])
    target = scores - scores[:, [fixed]]
    if kind == "vector":
        model = Ridge(alpha=10.0).fit(x_vec[fit], target[fit])
        return np.argmax(model.predict(x_vec[held]), axis=1)
    if kind == "linear":  # a model a router could save as JSON: ridge on standardised signals and their squares
        z = (x_sig - x_sig[fit].mean(0)) / (x_sig[fit].std(0) + 1e-9)
        z = np.hstack([z, z ** 2])
        model = Ridge(alpha=10.0).fit(z[fit], target[fit])
        return np.argmax(model.predict(z[held]), axis=1)
    x = x_sig
    if kind == "both":
        pca = PCA(16, random_state=0).fit(x_vec[fit])
        x = np.hstack([x_sig, pca.transform(x_vec)])
    predicted = np.column_stack([
        HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05, min_samples_leaf=40, random_state=0)
        .fit(x[fit], target[fit, j]).predict(x[held]) for j in range(len(WEIGHTS))])
    return np.argmax(predicted, axis=1)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--cache", type=Path, help="a JSON file keeping the rankings' scores between runs")
    args = parser.parse_args()
    data = common.cached(args.cache, lambda: collect(args))
    datasets = np.array(data["dataset"])
    x_vec, x_sig, scores = (np.array(data[k]) for k in ("vectors", "signals", "scores"))
    gains = {}  # chooser -> setting -> (per-query gain over fixed, dataset), held-out rows in split order
    for kind in ("fixed", "dataset", "vector", "linear", "signals", "both", "oracle"):
        for setting, fit, held in splits(datasets):
            picked = choose(kind, fit, held, x_vec, x_sig, scores, datasets)
            fixed = int(np.argmax(scores[fit].mean(axis=0)))
            gain = scores[held][np.arange(held.sum()), picked] - scores[held, fixed]
            gains.setdefault(kind, {}).setdefault(setting, []).append((gain, datasets[held]))
        summary = {}
        for setting, parts in gains[kind].items():
            gain, names = (np.concatenate(p) for p in zip(*parts, strict=True))
            summary[setting] = round(100 * _mean(gain, names), 2)
            if kind not in ("fixed", "oracle"):
                summary[f"{setting} [95%]"] = _bootstrap(gain, names)
        left = gains[kind]["left out"]
        print(json.dumps({"chooser": kind, "gain_x100_over_fixed": summary,
                          "left_out_by_dataset": {n[0]: round(100 * float(g.mean()), 2) for g, n in left}}),
              flush=True)


def _mean(values: np.ndarray, names: np.ndarray) -> float:
    return float(np.mean([values[names == d].mean() for d in np.unique(names)]))


def _bootstrap(gain: np.ndarray, names: np.ndarray) -> list[float]:
    """``eval.paired_bootstrap``'s 95% interval (x100) of a per-query gain over ``fixed``, stratified by dataset."""
    from eval import paired_bootstrap

    pairs = [(dict(enumerate(gain[names == d].tolist())), dict.fromkeys(range(int((names == d).sum())), 0.0))
             for d in np.unique(names)]
    _, low, high = paired_bootstrap(pairs)
    return [round(100 * low, 2), round(100 * high, 2)]


if __name__ == "__main__":
    main()
