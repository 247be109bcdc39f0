"""The nearest stored training query decides, by its dataset's best system (its own expert without systems)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retriever.routers.base import Router, Routing, RoutingData, cosines, register_router, softmax
from retriever.routers.settings import RouterOptions, check_seed

__all__ = ["DatasetOptions", "DatasetRouter"]


@dataclass(frozen=True)
class DatasetOptions(RouterOptions):
    """``per_dataset``: training queries kept per dataset (a seeded sample, ``seed``)."""

    per_dataset: int = 100
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.per_dataset, int) or isinstance(self.per_dataset, bool) or self.per_dataset < 1:
            raise ValueError(f"per_dataset must be a positive integer, got {self.per_dataset!r}")
        check_seed(self.seed)


@register_router
class DatasetRouter(Router):
    name = "dataset"
    Options = DatasetOptions
    order = 20

    def __init__(self, systems, options, vectors: np.ndarray, owners: np.ndarray, **context):
        super().__init__(systems, options, **context)
        self.vectors, self.owners = vectors, owners

    @classmethod
    def _fit(cls, data: RoutingData, options: DatasetOptions, **context) -> DatasetRouter:
        rng = np.random.default_rng(options.seed)
        keep, owners = [], []
        own = data.dataset_systems or data.dataset_experts  # a dataset's best system, else its own expert
        for dataset in sorted(set(data.datasets)):
            expert = own.get(dataset)
            if expert is None:
                continue
            rows = np.flatnonzero(np.array(data.datasets) == dataset)
            rows = np.sort(rng.permutation(rows)[:options.per_dataset])
            keep += rows.tolist()
            owners += [data.systems.index(expert)] * len(rows)
        if not keep:
            raise ValueError("the dataset router needs at least one dataset that has its own expert")
        return cls(data.systems, options, data.vectors[keep].astype(np.float32), np.array(owners, dtype=np.int64),
                   **context)

    def similarity(self, vectors: np.ndarray) -> np.ndarray:
        return cosines(vectors, self.vectors).max(axis=1)

    def _route(self, vectors: np.ndarray) -> Routing:
        sims = cosines(vectors, self.vectors)
        scores = np.full((len(vectors), len(self.systems)), -np.inf, dtype=np.float32)
        for j in np.unique(self.owners):
            scores[:, j] = sims[:, self.owners == j].max(axis=1)
        return Routing(self.systems, softmax(scores))

    def arrays(self):
        return {"vectors": self.vectors, "owners": self.owners}

    @classmethod
    def from_arrays(cls, systems, options, arrays, extra, **context):
        return cls(systems, options, arrays["vectors"], arrays["owners"], **context)
