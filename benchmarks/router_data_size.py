"""Does a router get better with more routing queries? Fit on a random fraction of one in-domain fold, score on
the other fold's unseen queries (no expert trained on them), the same held-out queries for every fraction: mean
over datasets of the routed expert's nDCG@10 gain over the base model, x100 (``retriever.routers.fold_gains``'s
in-domain setting, without any fallback). Training queries only, never test.

Usage: ``python benchmarks/router_data_size.py ROUTER_DIR [KIND ...] [--fractions 0.25 0.5 1] [--repeats 3]``
(default kinds: pilot classifier), for the datasets the router directory's saved pilot was built from.
"""

from __future__ import annotations

import argparse
import json

import common
import numpy as np


def main() -> None:
    from retriever import BASE, ROUTERS, RoutingData, in_domain_folds

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--repeats", type=int, default=3, help="random subsamples per fraction below 1")
    args, kinds, data = common.routing_arguments(parser, ["pilot", "classifier"])
    if data.trained_on is None:
        raise SystemExit("the routing data does not say which queries the experts were trained on; rebuild it")
    datasets, base, folds = np.array(data.datasets), data.systems.index(BASE), in_domain_folds(data)
    held_out = int(sum(held.sum() for _, held in folds))
    print(json.dumps({"routing queries": len(datasets), "held-out unseen queries": held_out}))
    for kind in kinds:
        for fraction in args.fractions:
            means, by_dataset = [], []
            for seed in range(args.repeats if fraction < 1 else 1):
                rng = np.random.default_rng(seed)
                gains, names = [], []
                for fit, held in folds:
                    rows = np.flatnonzero(fit & (rng.random(len(datasets)) < fraction))
                    fitted = RoutingData(data.vectors[rows], [data.labels[i] for i in rows], datasets[rows].tolist(),
                                         data.dataset_experts, data.systems)
                    chosen = [data.systems.index(e) for e in ROUTERS[kind].fit(fitted).route(data.vectors[held]).choice]
                    gains.append(data.scores[held, chosen] - data.scores[held, base])
                    names.append(datasets[held])
                gain, name = np.concatenate(gains), np.concatenate(names)
                per = {d: 100 * gain[name == d].mean() for d in np.unique(name)}
                means.append(round(float(np.mean(list(per.values()))), 2))
                by_dataset.append(per)
            average = {d: round(float(np.mean([p[d] for p in by_dataset])), 2) for d in by_dataset[0]}
            print(json.dumps({"router": kind, "fraction": fraction, "gain x100": means, "by dataset": average}),
                  flush=True)


if __name__ == "__main__":
    main()
