"""A domain with no expert, on training queries: each dataset left out together with its expert (and every system
using it), the saved router's kind refitted on the rest with its saved fit options, and its saved novelty
threshold and default system applied to the left-out queries (``retriever.routers.fold_gains``' "left out"
setting; never test queries). Prints the mean nDCG@10 gain over the base per left-out dataset (x100), with and
without the novelty fallback, and the share of queries it sent to the default system.

With ``--dataset D`` (a dataset with no expert, repeatable), also D's own *training* queries (scored into the
router directory's routing data like the experts' datasets), routed by the saved router as it is: the gain over
the base and the systems chosen.

Usage: ``python benchmarks/unseen_domains.py ROUTER_DIR [--router NAME] [--dataset D ...]`` (default router: the
directory's default)
"""

from __future__ import annotations

import json

import common
import numpy as np


def main() -> None:
    from experts import cached_routing_data
    from retriever import ROUTERS, RouterDirectory, fold_gains, load_encoder

    parser = common.parser(__doc__)
    parser.add_argument("router_dir")
    parser.add_argument("--router", help="a built router [default: the directory's default]")
    parser.add_argument("--dataset", action="append", default=[], help="a dataset with no expert (repeatable)")
    args = parser.parse_args()
    store = RouterDirectory(args.router_dir, load_encoder().info)
    saved = store.load_router(args.router or store.default_router())
    info = saved.info
    data = cached_routing_data(store, info["datasets"], info.get("lexical_keys"), info.get("fusion", "convex"),
                               saved.space.layer)  # the vectors the saved router routes on
    options = saved.settings.to_json()  # the kind's own options, without requests and calibrated values
    confidence, similarity, gain, names, rows = fold_gains(ROUTERS[saved.name], data, options)["left out"]
    default = saved.options.get("default", "base")
    back = (similarity < saved.options.get("min_similarity", 0.0)) | \
        (confidence < saved.options.get("min_confidence", 0.0))
    fallen = data.system_scores(default)[rows] - data.system_scores("base")[rows]
    kept = np.where(back, fallen, gain)
    for name in np.unique(names):
        mine = names == name
        print(json.dumps({"left_out": str(name), "router": saved.name, "routes_on": saved.space.describe(),
                          "queries": int(mine.sum()),
                          "gain_x100": round(100 * float(kept[mine].mean()), 2),
                          "gain_x100_without_fallback": round(100 * float(gain[mine].mean()), 2),
                          "to_default": default, "share_to_default": round(float(back[mine].mean()), 3)}))
    for name in args.dataset:
        print(json.dumps(no_expert_queries(args, store, saved, name)))


def no_expert_queries(args, store, saved, name: str) -> dict:
    """The saved router on the training queries of dataset ``name`` (which has no expert)."""
    from collections import Counter

    from eval import open_dataset
    from experts import cached_auto_systems, hybrid_label, prefix_file, score_experts
    from retriever import MultiExpertEncoder, ensure_index, ensure_lexical_index, load_encoder
    from retriever.ranking.systems import AUTO, BM25, dense_part

    if name in store.domain_experts():
        raise SystemExit(f"{name} has an expert ({store.domain_experts()[name]}); name a dataset without one")
    encoder = store.load_into(MultiExpertEncoder(load_encoder()))
    dataset = open_dataset(args.data_dir, name)
    index = ensure_index(dataset, encoder.base, args.cache_dir)
    lexical = ensure_lexical_index(dataset, args.cache_dir)
    info = saved.info
    score_experts(dataset, index, encoder, store, store.candidates(), info["max_queries"], info["seed"],
                  lexical=lexical, layer=saved.space.layer)
    folder = store.routing_data_path(name)
    fused = saved.fusion or store.load_fusion()  # the hybrids fused as the router's labels were

    def column(system: str) -> np.ndarray:
        expert = dense_part(system)
        record = json.loads((folder / f"scores-{BM25 if expert is None else expert}.json").read_text())
        if system == AUTO:  # the dataset's queries decide together, as a call's unfamiliar queries do
            chosen = cached_auto_systems(record, name)
            parts = {s: column(s) for s in set(chosen)}
            return np.array([parts[s][i] for i, s in enumerate(chosen)])
        if not system.startswith("hybrid:"):
            return np.array(record["ndcg@10"])
        return np.array(record["hybrid"][hybrid_label(fused, system)])

    raw = np.load(folder / ("base_vectors.npy" if saved.space.layer is None else prefix_file(saved.space.layer)))
    choice = saved.route(saved.space.vectors(raw)).choice
    scores = {system: column(system) for system in {*choice, "base"}}
    gain = [scores[c][i] - scores["base"][i] for i, c in enumerate(choice)]
    return {"no_expert_dataset": name, "split": "train", "router": saved.name,
            "routes_on": saved.space.describe(), "queries": len(choice),
            "gain_x100": round(100 * float(np.mean(gain)), 2), "chosen": dict(Counter(choice).most_common())}


if __name__ == "__main__":
    main()
