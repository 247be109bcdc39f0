"""``TrainConfig``: every setting of expert training, validated when it is made (and ``Negatives``).

Kept apart from the trainer so that reading or checking a configuration (the CLI's options, an overrides
file) needs no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from enum import StrEnum

from retriever.storage.files import parse_json

__all__ = ["ROUTE_ON", "Negatives", "TrainConfig"]

# What routers route on: the base model's embeddings (the paper's pilots, the default; routed search reuses the base
# pass) or the experts' shared prefix (``experts.routing.prefix_layer``; one encoder pass per routed query).
ROUTE_ON = ("embeddings", "prefix")
MAX_SEED = 2**32 - 1  # what torch and numpy both take


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
    # LoRA on the top this many transformer layers only (0: every layer). Routed search then reuses the base pass
    # below them; 3 of MiniLM's 6 is the fewest within 0.5 of all-layer experts' held-out gain (BENCHMARKS.md §2b).
    # A model with fewer layers is adapted in all of them.
    lora_layers: int = 3
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
        if self.lora_layers < 0:
            raise ValueError(f"lora_layers must be an integer >= 0 (0: every layer), got {self.lora_layers!r}")
        if not isinstance(self.anchor_documents, int) or self.anchor_documents < 0:
            raise ValueError(f"anchor_documents must be an integer >= 0, got {self.anchor_documents!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
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
        a TypeError later); a float field also takes an integer but never NaN or an infinity, ``bool`` is never a
        number."""
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
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
                what = "a finite number"
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

    @staticmethod
    def parse_fields(text: str | None) -> dict:
        """A JSON object of fields given as text (``train-expert --config``; ``{}`` for none): malformed JSON,
        NaN/Infinity or another JSON value is a ValueError quoting ``text``."""
        try:
            fields = parse_json(text) if text else {}
        except ValueError as err:  # malformed, or NaN/Infinity (parse_json)
            raise ValueError(f"not valid JSON ({err}): {text!r}") from None
        if not isinstance(fields, dict):
            raise ValueError(f"must be a JSON object, got {text!r}")
        return fields

    def to_json(self) -> dict:
        data = asdict(self)
        data["negatives"] = self.negatives.value
        data["target_modules"] = list(self.target_modules)
        return data
