"""Probe training settings on one dataset: held-out nDCG@10 along the way for each TrainConfig given as JSON.

Usage: ``python benchmarks/probe_training.py nfcorpus '{"learning_rate": 5e-4}' '{"positives": "sampled"}'``
(data from ``$ROUTERRETRIEVER_DATA_DIR``, indexes cached in ``$ROUTERRETRIEVER_CACHE_DIR``). Each probe runs at
most 120 steps with a held-out check every 40 and patience 1 unless the JSON says otherwise. Nothing is saved.
"""

from __future__ import annotations

import json
import time

import common


def main() -> None:
    from experts import TrainConfig, train_expert
    from retriever import load_encoder

    parser = common.parser(__doc__)
    parser.add_argument("dataset")
    parser.add_argument("specs", nargs="+", metavar="JSON", help="TrainConfig fields, one probe each")
    args = parser.parse_args()
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, [args.dataset], encoder)
    dataset, index = opened[args.dataset], indexes[args.dataset]
    for spec in args.specs:
        config = TrainConfig.from_fields({"max_steps": 120, "eval_steps": 40, "patience": 1, **json.loads(spec)})
        start = time.perf_counter()
        result = train_expert([(dataset, index)], encoder, config)
        print(json.dumps({"dataset": dataset.name, "config": json.loads(spec),
                          "seconds": round(time.perf_counter() - start),
                          "heldout_ndcg@10": [h["heldout_ndcg@10"] for h in result.history]}), flush=True)


if __name__ == "__main__":
    main()
