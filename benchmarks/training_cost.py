"""Training cost: the cached-vector LoRA trainer against a plain two-tower sentence-transformers loop.

Both run the same number of steps on the same batches of a dataset's training queries (batch size 32):

- ``cached``: the trainer's own step (``experts.train``): LoRA on the query side, queries encoded with gradients,
  documents taken from the frozen-base vectors in the corpus index, softmax over the whole corpus;
- ``two-tower``: the usual loop (MultipleNegativesRankingLoss's math): the full model encodes the queries *and*
  their positive documents every step, in-batch negatives, every weight trained.

Usage: ``python benchmarks/training_cost.py --dataset scifact --steps 30`` (data dir from ``--data-dir`` or
``$ROUTERRETRIEVER_DATA_DIR``, index cache from ``$ROUTERRETRIEVER_CACHE_DIR``). Prints JSON lines.
"""

from __future__ import annotations

import json
import time

import common
import numpy as np
import torch


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from experts import TrainConfig, TrainingSource, batch_loss, epoch_batches, lora_query_model
    from retriever import load_encoder

    encoder = load_encoder(device="cpu")
    opened, indexes = common.open_indexed(args, [args.dataset], encoder)
    dataset, index = opened[args.dataset], indexes[args.dataset]
    config = TrainConfig()
    source = TrainingSource(dataset, index, "train", config)
    batches = [b for _, b in epoch_batches([source], config, np.random.default_rng(0))]
    batches = (batches * (args.steps // len(batches) + 1))[: args.steps]
    doc_text = {row: doc.content() for row, doc in enumerate(dataset.corpus())}

    timings = {}
    torch.manual_seed(0)
    model = lora_query_model(encoder, config)  # the trainer's own LoRA model (r 8, alpha 32, q/k/v)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    model.train()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for batch in batches:
        loss = batch_loss(model, source, batch, config, rng)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    timings["cached"] = time.perf_counter() - start

    torch.manual_seed(0)
    model = SentenceTransformer(str(encoder.path), device="cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    model.train()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for batch in batches:
        queries = [source.train[i].text for i in batch]
        docs = [doc_text[int(rng.choice(source.train[i].positives))] for i in batch]
        q = model(model.preprocess(queries))["sentence_embedding"]
        d = model(model.preprocess(docs))["sentence_embedding"]
        loss = torch.nn.functional.cross_entropy(q @ d.T * 20.0, torch.arange(len(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    timings["two-tower"] = time.perf_counter() - start

    for name, seconds in timings.items():
        print(json.dumps({"dataset": args.dataset, "trainer": name, "steps": args.steps, "batch_size": 32,
                          "seconds": round(seconds, 1), "seconds_per_step": round(seconds / args.steps, 3)}))
    print(json.dumps({"speedup_cached_over_two_tower": round(timings["two-tower"] / timings["cached"], 2)}))


if __name__ == "__main__":
    main()
