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
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from enum import StrEnum

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.metrics import per_query_ndcg
from experts.pairs import data_fingerprint, split_heldout, training_examples
from retriever.encoder import Encoder
from retriever.index import CorpusIndex
from retriever.search import search

__all__ = ["Negatives", "TrainConfig", "TrainedExpert", "heldout_split", "train_expert"]

logger = logging.getLogger(__name__)


class Negatives(StrEnum):
    CORPUS = "corpus"
    HARD = "hard"
    IN_BATCH = "in-batch"


@dataclass(frozen=True)
class TrainConfig:
    r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    base_dropout: bool = True  # False: the frozen base's own dropout is off (it took 16% of a profiled step)
    target_modules: tuple[str, ...] = ("query", "key", "value")
    learning_rate: float = 2e-3
    batch_size: int = 32
    epochs: int = 12
    max_steps: int = 200  # a step budget: large training splits stop here (about 4 minutes of short queries)
    eval_steps: int = 40  # held-out evaluation every epoch, or every this many steps if an epoch is longer
    temperature: float = 0.05
    negatives: Negatives = Negatives.CORPUS
    positives: str = "all"  # "all": the whole positive set is the target; "sampled": one positive per step
    hard_negatives: int = 32
    heldout_fraction: float = 0.1
    heldout_max: int = 300  # per dataset
    heldout_groups: str = "query"  # "title": hold out whole groups of queries whose first positive shares a title
    queries_per_dataset: int = 500  # per epoch, when training on several datasets (balanced, with replacement)
    patience: int = 3  # held-out evaluations without improvement before stopping
    anchor_weight: float = 0.0  # > 0: also pull the expert's vectors of other domains' queries (anchors) to the base's
    anchor_batch: int = 8  # anchor queries per step
    anchor_words: int = 32  # anchors are cut to their first words: a long anchor would cost as much as a batch
    anchor_documents: int = 0  # documents of each anchor dataset that join its queries as anchors (long texts)
    select_on_heldout: bool = True  # False: keep the last epoch (held-out scores are still recorded)
    seed: int = 0

    def __post_init__(self):
        self._check_types()
        try:
            object.__setattr__(self, "negatives", Negatives(self.negatives))
        except ValueError:
            valid = ", ".join(n.value for n in Negatives)
            raise ValueError(f"unknown negatives {self.negatives!r}; valid: {valid}") from None
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.positives not in ("sampled", "all"):
            raise ValueError(f"unknown positives {self.positives!r}; valid: sampled, all")
        if self.heldout_groups not in ("query", "title"):
            raise ValueError(f"unknown heldout_groups {self.heldout_groups!r}; valid: query, title")
        for name in ("r", "lora_alpha", "batch_size", "epochs", "max_steps", "eval_steps", "hard_negatives",
                     "heldout_max", "queries_per_dataset", "anchor_batch",
                     "anchor_words"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.anchor_documents, int) or self.anchor_documents < 0:
            raise ValueError(f"anchor_documents must be an integer >= 0, got {self.anchor_documents!r}")
        for name in ("patience", "anchor_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.anchor_documents and not self.anchor_weight:
            raise ValueError(f"anchor_documents is {self.anchor_documents} but anchor_weight is 0: documents are "
                             "anchors only with an anchor weight > 0")
        for name, low, high in (("learning_rate", 0, 1), ("temperature", 0, 10), ("lora_dropout", -1e-12, 1),
                                ("heldout_fraction", 0, 1)):
            value = getattr(self, name)
            if not low < value < high:
                raise ValueError(f"{name} must be in ({max(low, 0)}, {high}), got {value!r}")

    def _check_types(self) -> None:
        """Each field has its default's type (JSON gives any type: ``"10"`` for a step count is an error here, not
        a TypeError later); a float field also takes an integer, ``bool`` is never a number."""
        for f in dataclass_fields(self):
            value, expected = getattr(self, f.name), type(f.default)
            if expected is tuple:
                ok = isinstance(value, list | tuple) and bool(value) and all(isinstance(v, str) for v in value)
                what = "a non-empty list of module names"
            elif expected is bool:
                ok, what = isinstance(value, bool), "true or false"
            elif expected is int:
                ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
            elif expected is float:
                ok, what = isinstance(value, int | float) and not isinstance(value, bool), "a number"
            else:  # str and str enums
                ok, what = isinstance(value, str), "a string"
            if not ok:
                raise ValueError(f"{f.name} must be {what}, got {value!r}")

    @classmethod
    def from_fields(cls, fields: dict) -> TrainConfig:
        """From a JSON object of fields (a CLI option, an overrides file): an unknown field is a ValueError that
        names it and the valid ones, like a bad value, instead of the constructor's TypeError."""
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training setting(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(cls.__dataclass_fields__)}")
        return cls(**fields)

    def to_json(self) -> dict:
        data = asdict(self)
        data["negatives"] = self.negatives.value
        data["target_modules"] = list(self.target_modules)
        return data


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
    train, heldout = split_heldout(examples, fraction, config.seed, groups)
    return examples, train, heldout


class _Source:
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


def _epoch_batches(
    sources: list[_Source], config: TrainConfig, rng: np.random.Generator
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


def _batch_loss(model, source: _Source, batch: np.ndarray, config: TrainConfig, rng: np.random.Generator):
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
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from sentence_transformers import SentenceTransformer

    config = config or TrainConfig()
    if split == "test":
        raise ValueError("experts are never trained on the test split")
    if not sources:
        raise ValueError("no training datasets given")
    if config.anchor_weight > 0 and not anchors:
        raise ValueError(f"anchor_weight is {config.anchor_weight} but no anchors were given: pass other domains' "
                         "queries as anchors, or set anchor_weight to 0")
    for _, index in sources:
        index.check_model(encoder.info)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = [_Source(dataset, index, split, config) for dataset, index in sources]
    if config.negatives is Negatives.HARD:
        for source in data:
            source.mine_hard_negatives(encoder, config.hard_negatives)

    model = SentenceTransformer(str(encoder.path), device="cpu", local_files_only=True)
    transformer = model[0]
    transformer.model = get_peft_model(transformer.model, LoraConfig(
        r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none",
    ))
    peft_model = transformer.model
    if not config.base_dropout:
        for name, module in peft_model.named_modules():
            if isinstance(module, torch.nn.Dropout) and "lora_dropout" not in name:
                module.p = 0.0
    anchors = [" ".join(text.split()[: config.anchor_words]) for text in anchors] if config.anchor_weight > 0 else []
    anchor_vectors = torch.from_numpy(encoder.encode(anchors)) if anchors else None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)

    def heldout() -> float:
        model.eval()
        return float(np.mean([source.heldout_ndcg(model) for source in data]))

    def snapshot() -> dict:
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}

    names = [source.name for source in data]
    base_score = best_score = heldout()
    best_state, best_step, best_epoch, stale = snapshot(), 0, 0, 0
    history = [{"step": 0, "epoch": 0, "heldout_ndcg@10": round(base_score, 5)}]
    logger.info("%s: %d train / %d held-out queries; base held-out nDCG@10 %.4f", "+".join(names),
                sum(len(s.train) for s in data), sum(len(s.heldout) for s in data), base_score)
    steps_per_epoch = len(_epoch_batches(data, config, np.random.default_rng(0)))
    total = min(config.epochs * steps_per_epoch, config.max_steps)
    eval_every = min(steps_per_epoch, config.eval_steps)
    bar = tqdm(total=total, desc=f"training {'+'.join(names)}"[:60], unit="step", disable=not progress)
    step, losses, stop = 0, [], False
    for epoch in range(1, config.epochs + 1):
        for s, batch in _epoch_batches(data, config, rng):
            model.train()
            loss = _batch_loss(model, data[s], batch, config, rng)
            if anchors:
                picked = rng.choice(len(anchors), size=min(config.anchor_batch, len(anchors)), replace=False)
                vectors = model(model.preprocess([anchors[i] for i in picked]))["sentence_embedding"]
                drift = ((vectors - anchor_vectors[torch.from_numpy(picked)]) ** 2).sum(dim=1).mean()
                loss = loss + config.anchor_weight * drift
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}", best=f"{best_score:.4f}")
            if step % eval_every and step < total:
                continue
            score = heldout()
            history.append({"step": step, "epoch": epoch, "loss": round(float(np.mean(losses)), 5),
                            "heldout_ndcg@10": round(score, 5)})
            logger.info("%s step %d (epoch %d): loss %.4f, held-out nDCG@10 %.4f", "+".join(names), step, epoch,
                        np.mean(losses), score)
            losses = []
            if score > best_score or not config.select_on_heldout:
                best_score, best_step, best_epoch, best_state, stale = score, step, epoch, snapshot(), 0
            else:
                stale += 1
                stop = stale > config.patience
            if stop or step >= total:
                break
        if stop or step >= total:
            break
    bar.close()
    set_peft_model_state_dict(peft_model, best_state)
    model.eval()
    fingerprint = data_fingerprint([(s.name, s.examples, s.index.doc_ids) for s in data])
    return TrainedExpert(
        model=model, config=config, datasets=names, split=split, data_fingerprint=fingerprint,
        train_queries=sum(len(s.train) for s in data), heldout_queries=sum(len(s.heldout) for s in data),
        anchor_texts=len(anchors),
        best_step=best_step, best_epoch=best_epoch, heldout_ndcg_at_10=round(best_score, 5),
        heldout_base_ndcg_at_10=round(base_score, 5),
        seconds=time.perf_counter() - started, history=history,
    )
