"""Probe: what routers should route on, measured on the routing folds (training queries only, never test).

For a router directory whose routing data holds prefix states (``prefix-L.npy``, written by ``build-router``
with ``--route-on prefix``), fits each router kind with its CLI defaults (the pilot with the novelty fallback
calibrated, ``fit_router``) on three inputs: base embeddings (the paper's), layer L's mean-pooled states
L2-normalised as they are, and the same centered on the routing queries' mean (``RoutingSpace``, the default).
Prints each router's fold gains (nDCG@10 over the base, x100) and the mean pairwise cosine of each input.

Usage: ``python benchmarks/probe_routing_space.py ROUTER_DIR [--layer 3]``
"""

from __future__ import annotations

import dataclasses
import json

import common
import numpy as np


def main() -> None:
    from experts import cached_routing_data, prefix_file
    from retriever import RouterDirectory, load_encoder
    from retriever.routers import fit_router, novelty_kinds

    parser = common.parser(__doc__)
    parser.add_argument("router_dir")
    parser.add_argument("--layer", type=int, default=3)
    args = parser.parse_args()
    store = RouterDirectory(args.router_dir, load_encoder().info)
    info = store.load_router("pilot").info
    datasets, keys, fusion = info["datasets"], info.get("lexical_keys"), info.get("fusion", "convex")
    embeddings = cached_routing_data(store, datasets, keys, fusion)
    centered = cached_routing_data(store, datasets, keys, fusion, layer=args.layer)
    raw = np.concatenate([np.load(store.routing_data_path(d) / prefix_file(args.layer)) for d in datasets])
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    inputs = {"embeddings": embeddings, f"layer {args.layer}": dataclasses.replace(embeddings, vectors=raw),
              f"layer {args.layer}, centered": centered}
    for label, data in inputs.items():
        sample = data.vectors[:: max(1, len(data.vectors) // 500)]
        cosine = float((sample @ sample.T).mean())
        for kind in ("pilot", "classifier", "dataset"):
            router = fit_router(kind, data, novelty="auto" if kind in novelty_kinds() else "none")
            print(json.dumps({"input": label, "router": kind, "mean_pairwise_cosine": round(cosine, 3),
                              **{f"{k} x100": round(100 * v, 2) for k, v in router.fold_gain.items()},
                              "novelty": router.options.get("min_similarity"),
                              "default": router.options.get("default")}), flush=True)


if __name__ == "__main__":
    main()
