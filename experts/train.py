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
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.metrics import per_query_ndcg
from experts.pairs import Example, data_fingerprint, split_heldout, training_examples
from retriever.encoder import Encoder
from retriever.index import CorpusIndex
from retriever.search import rank

__all__ = ["Negatives", "TrainConfig", "TrainedExpert", "train_expert"]

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
    target_modules: tuple[str, ...] = ("query", "key", "value")
    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 12
    temperature: float = 0.05
    negatives: Negatives = Negatives.CORPUS
    hard_negatives: int = 32
    heldout_fraction: float = 0.1
    heldout_max: int = 300
    patience: int = 3
    select_on_heldout: bool = True  # False: keep the last epoch (held-out scores are still recorded)
    seed: int = 0

    def __post_init__(self):
        try:
            object.__setattr__(self, "negatives", Negatives(self.negatives))
        except ValueError:
            valid = ", ".join(n.value for n in Negatives)
            raise ValueError(f"unknown negatives {self.negatives!r}; valid: {valid}") from None
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for name in ("r", "lora_alpha", "batch_size", "epochs", "hard_negatives", "heldout_max"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience!r}")
        for name, low, high in (("learning_rate", 0, 1), ("temperature", 0, 10), ("lora_dropout", -1e-12, 1),
                                ("heldout_fraction", 0, 1)):
            value = getattr(self, name)
            if not low < value < high:
                raise ValueError(f"{name} must be in ({max(low, 0)}, {high}), got {value!r}")

    def to_json(self) -> dict:
        data = asdict(self)
        data["negatives"] = self.negatives.value
        data["target_modules"] = list(self.target_modules)
        return data


@dataclass
class TrainedExpert:
    """A trained adapter (``peft_model`` holds the selected epoch's weights) and what describes it."""

    peft_model: object
    config: TrainConfig
    dataset: str
    split: str
    data_fingerprint: str
    train_queries: int
    heldout_queries: int
    best_epoch: int
    heldout_ndcg_at_10: float
    heldout_base_ndcg_at_10: float
    seconds: float
    history: list[dict] = field(default_factory=list)

    def write(self, directory) -> None:
        """Write ``adapter_model.safetensors`` and ``adapter_config.json`` (peft's format) into ``directory``."""
        self.peft_model.save_pretrained(str(directory))
        (directory / "README.md").unlink(missing_ok=True)

    def meta(self) -> dict:
        return {
            "domain": self.dataset,
            "training": {
                "dataset": self.dataset, "split": self.split, "data_fingerprint": self.data_fingerprint,
                "train_queries": self.train_queries, "heldout_queries": self.heldout_queries,
                "hyperparameters": self.config.to_json(), "seconds": round(self.seconds, 1),
                "best_epoch": self.best_epoch, "history": self.history,
            },
            "metrics": {"heldout_ndcg@10": self.heldout_ndcg_at_10,
                        "heldout_base_ndcg@10": self.heldout_base_ndcg_at_10},
        }


def _heldout_ndcg(model, examples: list[Example], qrels: dict, doc_vectors: np.ndarray, doc_ids: list[str]) -> float:
    vectors = model.encode([e.text for e in examples], batch_size=64, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    scores = vectors @ doc_vectors.T
    k = min(101, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    ids = [e.query_id for e in examples]
    results = rank(ids, np.take_along_axis(top_scores, order, 1), np.take_along_axis(top, order, 1), doc_ids, 100)
    return float(np.mean(list(per_query_ndcg({q: qrels[q] for q in ids}, results).values())))


def _hard_negatives(examples: list[Example], base_vectors: np.ndarray, doc_vectors: np.ndarray, count: int,
                    self_rows: list[int | None]) -> list[np.ndarray]:
    scores = base_vectors @ doc_vectors.T
    out = []
    for e, row_scores, self_row in zip(examples, scores, self_rows, strict=True):
        excluded = set(e.positives) | ({self_row} if self_row is not None else set())
        ranked = np.argsort(-row_scores)[: count + len(excluded)]
        out.append(np.array([r for r in ranked if r not in excluded][:count], dtype=np.int64))
    return out


def train_expert(
    dataset,
    encoder: Encoder,
    index: CorpusIndex,
    config: TrainConfig | None = None,
    split: str = "train",
    *,
    progress: bool = False,
) -> TrainedExpert:
    """Train a LoRA query expert on ``dataset``'s ``split`` against the frozen-base vectors in ``index``."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from sentence_transformers import SentenceTransformer

    config = config or TrainConfig()
    if split == "test":
        raise ValueError("experts are never trained on the test split")
    index.check_model(encoder.info)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    doc_ids = index.doc_ids
    doc_vectors = np.ascontiguousarray(index.embeddings, dtype=np.float32)
    examples = training_examples(dataset, split, doc_ids)
    qrels = dataset.split(split).qrels
    fraction = min(config.heldout_fraction, config.heldout_max / len(examples))
    train, heldout = split_heldout(examples, fraction, config.seed)
    row_of = {doc_id: row for row, doc_id in enumerate(doc_ids)}

    model = SentenceTransformer(str(encoder.path), device="cpu", local_files_only=True)
    transformer = model[0]
    transformer.model = get_peft_model(transformer.model, LoraConfig(
        r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none",
    ))
    peft_model = transformer.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    docs = torch.from_numpy(doc_vectors.copy())

    self_rows = [row_of.get(e.query_id) for e in train]
    hard = None
    if config.negatives is Negatives.HARD:
        base_vectors = encoder.encode([e.text for e in train])
        hard = _hard_negatives(train, base_vectors, doc_vectors, config.hard_negatives, self_rows)

    model.eval()
    base_score = best_score = _heldout_ndcg(model, heldout, qrels, doc_vectors, doc_ids)
    best_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
    best_epoch, stale, history = 0, 0, [{"epoch": 0, "heldout_ndcg@10": round(base_score, 5)}]
    logger.info("%s: %d train / %d held-out queries; base held-out nDCG@10 %.4f",
                dataset.name, len(train), len(heldout), base_score)

    steps_per_epoch = -(-len(train) // config.batch_size)
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=f"training {dataset.name}", unit="step",
               disable=not progress)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            targets = [int(rng.choice(train[i].positives)) for i in batch]
            features = model.preprocess([train[i].text for i in batch])
            queries = model(features)["sentence_embedding"]
            if config.negatives is Negatives.CORPUS:
                candidates = torch.arange(len(doc_ids))
            else:
                pool = set(targets)
                if hard is not None:
                    for i in batch:
                        pool.update(hard[i].tolist())
                candidates = torch.tensor(sorted(pool))
            logits = queries @ docs[candidates].T / config.temperature
            position = {int(row): col for col, row in enumerate(candidates.tolist())}
            mask = torch.zeros_like(logits, dtype=torch.bool)
            for b, i in enumerate(batch):  # other positives and the query's own text are not negatives
                for row in (*train[i].positives, self_rows[i]):
                    col = position.get(row) if row is not None else None
                    if col is not None and row != targets[b]:
                        mask[b, col] = True
            logits = logits.masked_fill(mask, float("-inf"))
            labels = torch.tensor([position[t] for t in targets])
            loss = torch.nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}", best=f"{best_score:.4f}")
        model.eval()
        score = _heldout_ndcg(model, heldout, qrels, doc_vectors, doc_ids)
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "heldout_ndcg@10": round(score, 5)})
        logger.info("%s epoch %d: loss %.4f, held-out nDCG@10 %.4f", dataset.name, epoch, np.mean(losses), score)
        if score > best_score or not config.select_on_heldout:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
        else:
            stale += 1
            if stale > config.patience:
                break
    bar.close()
    set_peft_model_state_dict(peft_model, best_state)
    model.eval()
    return TrainedExpert(
        peft_model=peft_model, config=config, dataset=dataset.name, split=split,
        data_fingerprint=data_fingerprint(examples, doc_ids), train_queries=len(train),
        heldout_queries=len(heldout), best_epoch=best_epoch, heldout_ndcg_at_10=round(best_score, 5),
        heldout_base_ndcg_at_10=round(base_score, 5), seconds=time.perf_counter() - started, history=history,
    )
