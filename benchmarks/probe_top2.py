"""Probe: when the router is unsure, fuse the rankings of its top two systems (training queries only, never test).

On the routing data of a router directory (the queries ``build-router`` scored), the saved router's kind and
options are refitted on the routing folds (``retriever.routers.fold_routings``: two in-domain folds, each dataset
left out with its expert). Each held-out query is answered by the fold router's top system, or, when the
router's confidence (its top weight) is below a threshold, by the fusion of its top two systems' rankings
(reciprocal-rank fusion, or the router-weighted convex fusion). Prints the mean nDCG@10 gain over the base
(x100; mean over datasets, then over the two settings) per threshold, and the best threshold.

Usage: ``python benchmarks/probe_top2.py ROUTER_DIR [--router pilot]``
"""

from __future__ import annotations

import json
from pathlib import Path

import common
import numpy as np


def rankings(store, data, data_dir, cache_dir, encoder) -> dict[str, dict[str, dict]]:
    """``{system: {row key: {doc: score}}}`` for every routing query (row key: its row in ``data``), top 100."""
    from eval import open_dataset
    from retriever import ensure_index, ensure_lexical_index, search, search_lexical
    from retriever.ranking.systems import FUSION_DEPTH, dense_part, is_auto, is_lexical, run_system
    from retriever.ranking.third_opinion import third_opinion

    out = {system: {} for system in data.systems}
    first = 0
    for name in dict.fromkeys(data.datasets):
        rows = sum(1 for d in data.datasets if d == name)
        qids = json.loads((store.routing_data_path(name) / "queries.json").read_text())["query_ids"]
        assert len(qids) == rows, (name, len(qids), rows)
        dataset = open_dataset(data_dir, name)
        texts = [dataset.split("train").queries[q] for q in qids]
        index = ensure_index(dataset, encoder.base, cache_dir)
        lexical = ensure_lexical_index(dataset, cache_dir)
        keys = [str(first + i) for i in range(rows)]
        lexical_hits = search_lexical(lexical, texts, keys, FUSION_DEPTH)
        third = third_opinion(encoder.base.model, index, dict(zip(keys, texts, strict=True)))
        for expert in sorted({dense_part(s) for s in data.systems} - {None}):
            dense = search(index, encoder.encode(texts, expert), keys, k=FUSION_DEPTH)
            for system in [s for s in data.systems if dense_part(s) == expert or (expert == "base" and s == "bm25")]:
                out[system].update(_floats(run_system(system, keys, dense, lexical_hits if is_lexical(system) else None,
                                              data.fusion, FUSION_DEPTH, third if is_auto(system) else None)))
        print(json.dumps({"ranked": name, "queries": rows}), flush=True)
        first += rows
    return out


def _floats(results: dict) -> dict:
    return {q: {doc: float(score) for doc, score in hits.items()} for q, hits in results.items()}


def main() -> None:
    from eval import open_dataset, per_query_ndcg
    from experts import cached_routing_data
    from retriever import ROUTERS, MultiExpertEncoder, RouterDirectory, fold_routings, load_encoder
    from retriever.ranking.systems import fuse

    parser = common.parser(__doc__)
    parser.add_argument("router_dir")
    parser.add_argument("--router", default="pilot")
    parser.add_argument("--rankings", type=Path, help="a JSON file caching the rankings between runs")
    args = parser.parse_args()
    encoder = MultiExpertEncoder(load_encoder())
    store = RouterDirectory(args.router_dir, encoder.info)
    store.load_into(encoder)
    saved = store.load_router(args.router)
    info = saved.info
    data = cached_routing_data(store, info["datasets"], info["lexical_keys"], info.get("fusion", "convex"),
                               saved.space.layer)  # the vectors the saved router routes on
    if args.rankings is not None and args.rankings.is_file():
        ranked = json.loads(args.rankings.read_text())
    else:
        ranked = rankings(store, data, args.data_dir, args.cache_dir, encoder)
        if args.rankings is not None:
            args.rankings.write_text(json.dumps(ranked))
    qrels = {}
    first = 0
    for name in dict.fromkeys(data.datasets):
        qids = json.loads((store.routing_data_path(name) / "queries.json").read_text())["query_ids"]
        judged = open_dataset(args.data_dir, name).split("train").qrels
        qrels.update({str(first + i): judged[q] for i, q in enumerate(qids)})
        first += len(qids)
    fit_options = saved.settings.to_json()
    min_similarity = saved.options.get("min_similarity", 0.0)
    default = saved.options.get("default", "base")
    base = data.systems.index("base")
    thresholds = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    curves = {"rrf": {}, "weighted": {}}
    for setting, held, router, routing in fold_routings(ROUTERS[saved.name], data, fit_options):
        rows = np.flatnonzero(held)
        order = np.argsort(-routing.weights, axis=1)
        similarity = router.similarity(data.vectors[held])
        back = np.zeros(len(rows), bool) if similarity is None else similarity < min_similarity
        top1 = [data.systems[j] for j in order[:, 0]]
        top2 = [data.systems[j] for j in order[:, 1]]
        one = np.array([data.system_scores(default if b else s)[r]
                        for r, s, b in zip(rows, top1, back, strict=True)])
        fused = {}
        for method in curves:
            runs = {}
            for i, r in enumerate(rows):
                w1, w2 = routing.weights[i, order[i, 0]], routing.weights[i, order[i, 1]]
                weight = 0.5 if method == "rrf" else float(w1 / (w1 + w2))
                runs[str(r)] = {doc: float(score) for doc, score in fuse(
                    ranked[top1[i]][str(r)], ranked[top2[i]][str(r)], weight,
                    "rrf" if method == "rrf" else "convex", 100).items()}
            ndcg = per_query_ndcg({str(r): qrels[str(r)] for r in rows}, runs)
            fused[method] = np.array([ndcg[str(r)] for r in rows])
        names = np.array([data.datasets[r] for r in rows])
        for method in curves:
            for t in thresholds:
                pick = np.where(back | (routing.confidence >= t), one, fused[method]) - data.scores[rows, base]
                curves[method].setdefault(setting, {}).setdefault(float(t), []).append((pick, names))
    for method, by_setting in curves.items():
        table = {}
        for t in thresholds:
            values = []
            for points in by_setting.values():
                gain = np.concatenate([p for p, _ in points[float(t)]])
                names = np.concatenate([n for _, n in points[float(t)]])
                values.append(np.mean([gain[names == d].mean() for d in np.unique(names)]))
            table[float(t)] = round(100 * float(np.mean(values)), 3)
        best = max(table, key=table.get)
        print(json.dumps({"fusion": method, "router": saved.name, "gain_x100_at_threshold": table,
                          "none": table[0.0], "best": best, "best_gain": table[best]}), flush=True)


if __name__ == "__main__":
    main()
