"""Probe training settings on one dataset: held-out nDCG@10 along the way for each TrainConfig given as JSON.

Usage: ``python eval/probe_training.py nfcorpus '{"learning_rate": 5e-4}' '{"positives": "sampled"}'``
(data from ``$ROUTERRETRIEVER_DATA_DIR``, indexes cached in ``$ROUTERRETRIEVER_CACHE_DIR``). Each probe runs at
most 120 steps with a held-out check every 40 and patience 1 unless the JSON says otherwise. Nothing is saved.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    from eval.data import open_dataset
    from experts import TrainConfig, train_expert
    from retriever.encoder import load_encoder
    from retriever.index import ensure_index

    if len(sys.argv) < 3:
        sys.exit(__doc__)
    encoder = load_encoder()
    dataset = open_dataset(None, sys.argv[1])
    index = ensure_index(dataset, encoder, os.environ.get("ROUTERRETRIEVER_CACHE_DIR", ".cache"))
    for spec in sys.argv[2:]:
        config = TrainConfig.from_fields({"max_steps": 120, "eval_steps": 40, "patience": 1, **json.loads(spec)})
        start = time.perf_counter()
        result = train_expert([(dataset, index)], encoder, config)
        print(json.dumps({"dataset": dataset.name, "config": json.loads(spec),
                          "seconds": round(time.perf_counter() - start),
                          "heldout_ndcg@10": [h["heldout_ndcg@10"] for h in result.history]}), flush=True)


if __name__ == "__main__":
    main()
