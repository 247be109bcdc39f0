"""Train unlabelled experts exactly as ``benchmark --unlabelled`` does (1,000 corpus sentences, the dataset's
settings of ``experts/training_overrides.json``, anchored on sentences of the other expert datasets' corpora) and
save each *whatever its self-check says*, marked forced where it failed: so that the check's verdict can be set
against the real outcome of the experts it refuses too (``unlabelled_experts.py``).

Prints each expert's self-check record. Usage:
``python benchmarks/train_unlabelled.py ROUTER_DIR --dataset nfcorpus --dataset perspectrum``
"""

from __future__ import annotations

import json
from pathlib import Path

import common
from unlabelled_experts import DATASETS


def main() -> None:
    from experts import TrainConfig
    from experts.workflows import DEFAULT_OVERRIDES, load_overrides
    from experts.workflows.unlabelled import PSEUDO_QUERIES, corpus_pseudo, pseudo_anchors, train_checked
    from retriever import RouterDirectory, load_encoder

    parser = common.parser(__doc__)
    parser.add_argument("router_dir", type=Path)
    parser.add_argument("--dataset", action="append", required=True, choices=DATASETS)
    args = parser.parse_args()
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, DATASETS, encoder)
    overrides = load_overrides(DEFAULT_OVERRIDES)
    store = RouterDirectory(args.router_dir, encoder.info, create=True)
    for name in args.dataset:
        config = TrainConfig.from_fields(overrides.get(name, {}))
        anchors = [opened[other] for other in DATASETS if other != name] if config.anchor_weight > 0 else []
        pseudo, check_queries = corpus_pseudo(opened[name], PSEUDO_QUERIES, config.seed)
        trained, check, meta = train_checked(pseudo, check_queries, "corpus", indexes[name], encoder, config,
                                             pseudo_anchors(anchors), progress=False)
        store.save_expert(name, trained.write, meta)
        print(json.dumps({"expert": name, **check}), flush=True)


if __name__ == "__main__":
    main()
