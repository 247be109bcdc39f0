"""The nearest stored training query decides, by its dataset's best system (its own expert without systems)."""

from __future__ import annotations

import numpy as np

from retriever.routers.base import Router, Routing, RoutingData, cosines, register_router, softmax

__all__ = ["DatasetRouter"]


@register_router
class DatasetRouter(Router):
    name = "dataset"
    order = 20

    def __init__(self, experts, options, vectors: np.ndarray, owners: np.ndarray):
        super().__init__(experts, options)
        self.vectors, self.owners = vectors, owners

    @classmethod
    def fit(cls, data: RoutingData, per_dataset: int = 100, seed: int = 0) -> DatasetRouter:
        rng = np.random.default_rng(seed)
        keep, owners = [], []
        own = data.dataset_systems or data.dataset_experts  # a dataset's best system, else its own expert
        for dataset in sorted(set(data.datasets)):
            expert = own.get(dataset)
            if expert is None:
                continue
            rows = np.flatnonzero(np.array(data.datasets) == dataset)
            rows = np.sort(rng.permutation(rows)[:per_dataset])
            keep += rows.tolist()
            owners += [data.experts.index(expert)] * len(rows)
        if not keep:
            raise ValueError("the dataset router needs at least one dataset that has its own expert")
        options = {"per_dataset": per_dataset, "seed": seed}
        return cls(data.experts, options, data.vectors[keep].astype(np.float32), np.array(owners, dtype=np.int64))

    def similarity(self, vectors: np.ndarray) -> np.ndarray:
        return cosines(vectors, self.vectors).max(axis=1)

    def _route(self, vectors: np.ndarray) -> Routing:
        sims = cosines(vectors, self.vectors)
        scores = np.full((len(vectors), len(self.experts)), -np.inf, dtype=np.float32)
        for j in np.unique(self.owners):
            scores[:, j] = sims[:, self.owners == j].max(axis=1)
        return Routing(self.experts, softmax(scores))

    def arrays(self):
        return {"vectors": self.vectors, "owners": self.owners}

    @classmethod
    def from_arrays(cls, experts, options, arrays, extra):
        return cls(experts, options, arrays["vectors"], arrays["owners"])
