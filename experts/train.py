"""Contrastive training of a LoRA *query* expert against cached frozen-base document vectors.

The document side never changes (documents are encoded by the frozen base, once, in the corpus index), so
each step encodes only the batch's queries and scores them against cached document vectors: against the whole
corpus (``corpus``: a softmax over every document, the default), against the batch's positives
(``in-batch``), or against those plus the base retriever's top-ranked non-relevant documents (``hard``).
Model selection uses nDCG@10 on a seeded held-out slice of the training split; the test split is never read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.metrics import per_query_ndcg
from experts.config import Negatives, TrainConfig
from experts.pairs import data_fingerprint, split_heldout, training_examples
from retriever.encoding.encoder import Encoder
from retriever.index.faiss_index import CorpusIndex
from retriever.ranking.topk import search

__all__ = [
    "TrainedExpert", "TrainingSource", "anchor_loss", "batch_loss", "epoch_batches", "heldout_split",
    "lora_query_model", "train_expert",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainedExpert:
    """A trained adapter (``model`` is the base model wrapping it, with the selected epoch's weights) and what
    describes it."""

    model: object  # sentence_transformers.SentenceTransformer
    config: TrainConfig
    datasets: list[str]
    split: str
    data_fingerprint: str
    train_queries: int
    heldout_queries: int
    anchor_texts: int
    best_step: int
    best_epoch: int
    heldout_ndcg_at_10: float
    heldout_base_ndcg_at_10: float
    seconds: float
    history: list[dict] = field(default_factory=list)

    @property
    def peft_model(self):
        """The peft-wrapped transformer inside ``model``."""
        return self.model[0].model

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Query vectors from the trained adapter, as the saved expert will give them."""
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True)

    def write(self, directory) -> None:
        """Write ``adapter_model.safetensors`` and ``adapter_config.json`` (peft's format) into ``directory``."""
        self.peft_model.save_pretrained(str(directory))
        (directory / "README.md").unlink(missing_ok=True)

    def meta(self) -> dict:
        return {
            "domain": "+".join(self.datasets),
            "training": {
                "datasets": self.datasets, "split": self.split, "data_fingerprint": self.data_fingerprint,
                "train_queries": self.train_queries, "heldout_queries": self.heldout_queries,
                "anchor_texts": self.anchor_texts,
                "hyperparameters": self.config.to_json(), "seconds": round(self.seconds, 1),
                "best_step": self.best_step, "best_epoch": self.best_epoch, "history": self.history,
            },
            "metrics": {"heldout_ndcg@10": self.heldout_ndcg_at_10,
                        "heldout_base_ndcg@10": self.heldout_base_ndcg_at_10},
        }


def heldout_split(dataset, doc_ids: list[str], split: str, config: TrainConfig):
    """``(examples, train slice, held-out slice)`` of ``dataset``'s ``split``, exactly as training makes them."""
    examples = training_examples(dataset, split, doc_ids)
    fraction = min(config.heldout_fraction, config.heldout_max / len(examples))
    groups = None
    if config.heldout_groups == "title":  # e.g. SQuAD: a title is an article, and test articles are unseen
        title_of = {doc.id: doc.title for doc in dataset.corpus()}
        groups = [title_of[doc_ids[e.positives[0]]] for e in examples]
    try:
        train, heldout = split_heldout(examples, fraction, config.seed, groups)
    except ValueError as err:
        raise ValueError(f"{dataset.name}/{split}: {err}") from None
    return examples, train, heldout


class TrainingSource:
    """One training dataset: its examples, held-out slice and cached frozen-base document vectors."""

    def __init__(self, dataset, index: CorpusIndex, split: str, config: TrainConfig):
        self.name = dataset.name
        self.index = index
        self.docs = torch.from_numpy(np.array(index.embeddings, dtype=np.float32))
        self.examples, self.train, self.heldout = heldout_split(dataset, index.doc_ids, split, config)
        self.qrels = dataset.split(split).qrels
        row_of = {doc_id: row for row, doc_id in enumerate(index.doc_ids)}
        self.self_rows = [row_of.get(e.query_id) for e in self.train]  # ArguAna-style: the query is a document
        self.hard: list[np.ndarray] | None = None

    def heldout_ndcg(self, model) -> float:
        vectors = model.encode([e.text for e in self.heldout], batch_size=64, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        ids = [e.query_id for e in self.heldout]
        results = search(self.index, vectors, ids, k=100)
        return float(np.mean(list(per_query_ndcg({q: self.qrels[q] for q in ids}, results).values())))

    def mine_hard_negatives(self, encoder: Encoder, count: int) -> None:
        base_vectors = encoder.encode([e.text for e in self.train])
        ids = [e.query_id for e in self.train]
        hits = search(self.index, base_vectors, ids, k=count + max(len(e.positives) for e in self.train))
        row_of = {doc_id: row for row, doc_id in enumerate(self.index.doc_ids)}
        self.hard = [
            np.array([row_of[d] for d in hits[e.query_id] if row_of[d] not in e.positives][:count], dtype=np.int64)
            for e in self.train
        ]


def epoch_batches(
    sources: list[TrainingSource], config: TrainConfig, rng: np.random.Generator
) -> list[tuple[int, np.ndarray]]:
    """Batches of one source each. With several sources, each gives ``queries_per_dataset`` examples."""
    batches = []
    for s, source in enumerate(sources):
        n = len(source.train)
        if len(sources) == 1:
            order = rng.permutation(n)
        else:
            want = config.queries_per_dataset
            order = rng.permutation(n)[:want] if n >= want else rng.choice(n, size=want, replace=True)
        batches += [(s, order[i : i + config.batch_size]) for i in range(0, len(order), config.batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] if len(sources) > 1 else batches


def batch_loss(model, source: TrainingSource, batch: np.ndarray, config: TrainConfig, rng: np.random.Generator):
    """InfoNCE over the candidates. ``positives="sampled"``: one positive per query is the target and the
    query's other positives are left out of the softmax; ``"all"``: the target is the query's whole positive
    set (log of its total probability), which is the same loss when a query has one positive."""
    targets = [int(rng.choice(source.train[i].positives)) for i in batch]
    queries = model(model.preprocess([source.train[i].text for i in batch]))["sentence_embedding"]
    if config.negatives is Negatives.CORPUS:
        candidates = torch.arange(len(source.docs))
    else:
        pool = set(targets)
        if source.hard is not None:
            for i in batch:
                pool.update(source.hard[i].tolist())
        candidates = torch.tensor(sorted(pool))
    logits = queries @ source.docs[candidates].T / config.temperature
    position = {int(row): col for col, row in enumerate(candidates.tolist())}
    excluded = torch.zeros_like(logits, dtype=torch.bool)  # never a negative: other positives, the query itself
    target = torch.zeros_like(logits, dtype=torch.bool)
    for b, i in enumerate(batch):
        example = source.train[i]
        for row in (*example.positives, source.self_rows[i]):
            col = position.get(row) if row is not None else None
            if col is None:
                continue
            if row == targets[b] or (config.positives == "all" and row in example.positives):
                target[b, col] = True
            else:
                excluded[b, col] = True
    logits = logits.masked_fill(excluded, float("-inf"))
    positive = torch.logsumexp(logits.masked_fill(~target, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - positive).mean()


def lora_query_model(encoder: Encoder, config: TrainConfig):
    """A fresh copy of the base model whose ``config.target_modules`` carry trainable LoRA factors (peft); with
    ``base_dropout=False`` the frozen base's own dropout is off."""
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(encoder.path), device="cpu", local_files_only=True)
    transformer = model[0]
    layers = transformer.model.config.num_hidden_layers
    adapted = min(config.lora_layers, layers) or layers  # 0, or more than the model has: every layer
    top = {"layers_to_transform": list(range(layers - adapted, layers))} if adapted < layers else {}
    transformer.model = get_peft_model(transformer.model, LoraConfig(
        r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", **top,
    ))
    if not config.base_dropout:
        for name, module in transformer.model.named_modules():
            if isinstance(module, torch.nn.Dropout) and "lora_dropout" not in name:
                module.p = 0.0
    return model


def anchor_loss(model, anchors: Sequence[str], anchor_vectors: torch.Tensor, config: TrainConfig,
                rng: np.random.Generator) -> torch.Tensor:
    """Mean squared distance between the expert's and the base's vectors of ``anchor_batch`` anchors drawn with
    ``rng``: what keeps a misrouted query's vector near the base's."""
    picked = rng.choice(len(anchors), size=min(config.anchor_batch, len(anchors)), replace=False)
    vectors = model(model.preprocess([anchors[i] for i in picked]))["sentence_embedding"]
    return ((vectors - anchor_vectors[torch.from_numpy(picked)]) ** 2).sum(dim=1).mean()


def _check_training(sources, encoder: Encoder, config: TrainConfig, split: str, anchors: Sequence[str]) -> None:
    if split == "test":
        raise ValueError("experts are never trained on the test split")
    if not sources:
        raise ValueError("no training datasets given")
    if config.anchor_weight > 0 and not anchors:
        raise ValueError(f"anchor_weight is {config.anchor_weight} but no anchors were given: pass other domains' "
                         "queries as anchors, or set anchor_weight to 0")
    for _, index in sources:
        index.check_model(encoder.info)


class _Selection:
    """Model selection on held-out nDCG@10: the base's score, the best score and weights so far, the checks since
    the last improvement (patience) and the history of every check."""

    def __init__(self, model, data: list[TrainingSource], config: TrainConfig):
        self.model, self.data, self.config = model, data, config
        self.names = "+".join(source.name for source in data)
        self.base_score = self.best_score = self.heldout()
        self.best_state, self.best_step, self.best_epoch, self.stale = self.snapshot(), 0, 0, 0
        self.history = [{"step": 0, "epoch": 0, "heldout_ndcg@10": round(self.base_score, 5)}]

    def heldout(self) -> float:
        self.model.eval()
        return float(np.mean([source.heldout_ndcg(self.model) for source in self.data]))

    def snapshot(self) -> dict:
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model[0].model).items()}

    def check(self, step: int, epoch: int, losses: list[float]) -> bool:
        """Score the held-out slice after ``step``, keep the weights if they are the best (or always, without
        ``select_on_heldout``); True once ``patience`` checks in a row have not improved."""
        score = self.heldout()
        self.history.append({"step": step, "epoch": epoch, "loss": round(float(np.mean(losses)), 5),
                             "heldout_ndcg@10": round(score, 5)})
        logger.info("%s step %d (epoch %d): loss %.4f, held-out nDCG@10 %.4f", self.names, step, epoch,
                    np.mean(losses), score)
        if score > self.best_score or not self.config.select_on_heldout:
            self.best_score, self.best_step, self.best_epoch, self.best_state = score, step, epoch, self.snapshot()
            self.stale = 0
            return False
        self.stale += 1
        return self.stale > self.config.patience

    def restore(self) -> None:
        """The best weights back into the model, in eval mode."""
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model[0].model, self.best_state)
        self.model.eval()


def _step(model, optimizer, source: TrainingSource, batch: np.ndarray, config: TrainConfig,
          rng: np.random.Generator, anchors: Sequence[str], anchor_vectors, names: str, step: int) -> float:
    """One optimizer step on ``batch`` (plus an anchor batch); its loss. A loss that is not finite stops training
    before the weights change."""
    model.train()
    loss = batch_loss(model, source, batch, config, rng)
    if anchors:
        loss = loss + config.anchor_weight * anchor_loss(model, anchors, anchor_vectors, config, rng)
    if not torch.isfinite(loss):  # never step (nor save) weights that are NaN from here on
        raise ValueError(f"training {names} diverged at step {step + 1}: the loss is "
                         f"{loss.item()}; try a lower learning rate or a higher temperature")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _train_steps(model, optimizer, data: list[TrainingSource], config: TrainConfig, rng: np.random.Generator,
                 anchors: Sequence[str], anchor_vectors, selection: _Selection, progress: bool) -> None:
    """Epochs of steps, a held-out check every ``eval_steps`` (and after the last), until ``max_steps``, the last
    epoch or the patience runs out."""
    names = selection.names
    steps_per_epoch = len(epoch_batches(data, config, np.random.default_rng(0)))
    total = min(config.epochs * steps_per_epoch, config.max_steps)
    eval_every = min(steps_per_epoch, config.eval_steps)
    bar = tqdm(total=total, desc=f"training {names}"[:60], unit="step", disable=not progress)
    step, losses, stop = 0, [], False
    for epoch in range(1, config.epochs + 1):
        for s, batch in epoch_batches(data, config, rng):
            losses.append(_step(model, optimizer, data[s], batch, config, rng, anchors, anchor_vectors, names, step))
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}", best=f"{selection.best_score:.4f}")
            if step % eval_every and step < total:
                continue
            stop = selection.check(step, epoch, losses)
            losses = []
            if stop or step >= total:
                break
        if stop or step >= total:
            break
    bar.close()


def train_expert(
    sources: Sequence[tuple[object, CorpusIndex]],
    encoder: Encoder,
    config: TrainConfig | None = None,
    split: str = "train",
    *,
    anchors: Sequence[str] = (),
    progress: bool = False,
) -> TrainedExpert:
    """Train one LoRA query expert on ``(dataset, corpus index)`` pairs (one for a domain expert; several,
    balanced per dataset, for a multi-task expert) against the indexes' frozen-base document vectors.

    ``anchors`` are texts from other domains (``experts.pairs.anchor_texts``): with ``config.anchor_weight > 0``
    each step adds the mean squared distance between the expert's and the base's vectors of ``anchor_batch`` of
    them, so that a query the router sends to the wrong expert is encoded much as the base would encode it."""
    config = config or TrainConfig()
    _check_training(sources, encoder, config, split, anchors)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = [TrainingSource(dataset, index, split, config) for dataset, index in sources]
    if config.negatives is Negatives.HARD:
        for source in data:
            source.mine_hard_negatives(encoder, config.hard_negatives)

    model = lora_query_model(encoder, config)
    anchors = [" ".join(text.split()[: config.anchor_words]) for text in anchors] if config.anchor_weight > 0 else []
    anchor_vectors = torch.from_numpy(encoder.encode(anchors)) if anchors else None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    selection = _Selection(model, data, config)
    logger.info("%s: %d train / %d held-out queries; base held-out nDCG@10 %.4f", selection.names,
                sum(len(s.train) for s in data), sum(len(s.heldout) for s in data), selection.base_score)
    _train_steps(model, optimizer, data, config, rng, anchors, anchor_vectors, selection, progress)
    selection.restore()
    fingerprint = data_fingerprint([(s.name, s.examples, s.index.doc_ids) for s in data])
    return TrainedExpert(
        model=model, config=config, datasets=[source.name for source in data], split=split,
        data_fingerprint=fingerprint, train_queries=sum(len(s.train) for s in data),
        heldout_queries=sum(len(s.heldout) for s in data), anchor_texts=len(anchors),
        best_step=selection.best_step, best_epoch=selection.best_epoch,
        heldout_ndcg_at_10=round(selection.best_score, 5), heldout_base_ndcg_at_10=round(selection.base_score, 5),
        seconds=time.perf_counter() - started, history=selection.history,
    )
