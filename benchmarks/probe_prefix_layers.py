"""Shared-prefix experts: LoRA on the top N transformer layers only, against all-layer experts.

For each N and each expert dataset, trains the expert exactly as ``routerretriever benchmark`` does (its
per-dataset settings from experts/training_overrides.json, anchored on the other expert datasets) plus
``lora_layers=N``, saves it into ``ROUTER_ROOT/prefix-N<N>/`` (so a later ``routerretriever benchmark --router``
on that directory reuses it), and prints one JSON line: held-out nDCG@10 (train queries the expert did not train
on) base -> expert, training seconds, and the own-dataset test nDCG@10, measured once. Experts already saved are
reported again without retraining.

Usage: ``python benchmarks/probe_prefix_layers.py ROUTER_ROOT --layers 1 2 3 [--dataset scifact ...]``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import common


def main() -> None:
    from eval.runs import SplitRun
    from experts import TrainConfig
    from experts.workflows import DEFAULT_EXPERT_DATASETS, DEFAULT_OVERRIDES, load_overrides, train_and_save
    from retriever import MultiExpertEncoder, RouterDirectory, load_encoder

    parser = common.parser(__doc__)
    parser.add_argument("router_root", type=Path)
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--dataset", dest="datasets", action="append")
    args = parser.parse_args()
    datasets = args.datasets or list(DEFAULT_EXPERT_DATASETS)
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, list(DEFAULT_EXPERT_DATASETS), encoder)
    overrides = load_overrides(DEFAULT_OVERRIDES)
    for layers in args.layers:
        store = RouterDirectory(args.router_root / f"prefix-N{layers}", encoder.info, create=True)
        for name in datasets:
            config = TrainConfig.from_fields({**overrides.get(name, {}), "lora_layers": layers})
            others = [opened[o] for o in DEFAULT_EXPERT_DATASETS if o != name] if config.anchor_weight > 0 else []
            if name in store.expert_names():
                info = store.expert_info(name)
                heldout = (info["metrics"]["heldout_base_ndcg@10"], info["metrics"]["heldout_ndcg@10"])
                seconds = info["training"]["seconds"]
            else:
                start = time.perf_counter()
                trained = train_and_save(store, name, opened[name], indexes[name], encoder, config,
                                         anchor_sets=others)
                heldout = (trained.heldout_base_ndcg_at_10, trained.heldout_ndcg_at_10)
                seconds = round(time.perf_counter() - start, 1)
            routed = store.load_into(MultiExpertEncoder(encoder), [name])
            run = SplitRun(opened[name], "test", routed, indexes[name])
            test = run.run(f"expert:{name}").scores.ndcg_at_10
            base = run.run("base").scores.ndcg_at_10
            print(json.dumps({"lora_layers": layers, "dataset": name, "heldout_base": round(heldout[0], 4),
                              "heldout_expert": round(heldout[1], 4), "test_base": round(base, 4),
                              "test_expert": round(test, 4), "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
