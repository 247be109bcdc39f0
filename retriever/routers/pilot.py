"""The paper's router: pilot embeddings (base-encoder centroids of training queries grouped by best expert)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from retriever.routers.base import Router, Routing, RoutingData, cosines, register_router, softmax
from retriever.routers.settings import RouterOptions, check_seed

__all__ = ["AGGREGATES", "Aggregate", "PilotOptions", "PilotRouter"]


class Aggregate(StrEnum):
    """How a pilot router turns an expert's pilots into its score (``PilotRouter``)."""

    DENSITY = "density"
    WEIGHTED = "weighted"
    MEAN = "mean"
    MAX = "max"


AGGREGATES = tuple(aggregate.value for aggregate in Aggregate)


@dataclass(frozen=True)
class PilotOptions(RouterOptions):
    """``aggregate`` (``Aggregate``); ``clusters``: k-means centroids per group of training queries (1: their
    mean); ``seed``: k-means'."""

    aggregate: Aggregate = Aggregate.DENSITY
    clusters: int = 1
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.aggregate, str) or self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; valid: {', '.join(AGGREGATES)}")
        object.__setattr__(self, "aggregate", Aggregate(self.aggregate))
        if not isinstance(self.clusters, int) or isinstance(self.clusters, bool) or self.clusters < 1:
            raise ValueError(f"clusters must be a positive integer, got {self.clusters!r}")
        check_seed(self.seed)


@register_router
class PilotRouter(Router):
    """Pilot embeddings (unit-normalised group centroids) and each pilot's group size.

    ``aggregate``: ``density`` (default) — an expert's weight is its share of a kernel density over all pilots,
    ``sum_p size_p * exp(cos(q, p) / 0.1)``: pilots far from the query add almost nothing, so an expert that
    also won a few queries in other domains is not diluted; ``weighted`` — the mean cosine similarity to the
    expert's pilots weighted by how many training queries each pilot stands for; ``mean`` — the paper's
    unweighted mean; ``max`` — the nearest pilot. The unweighted mean lets a pilot made of 2 queries count as
    much as one made of 400: once experts win a few queries in every dataset, every expert's pilots span every
    domain and the scores flatten (measured on our 7 domains: 24% of held-out training queries routed to their
    own expert with ``mean``, 83% with ``weighted``); the weighted mean still lets a concentrated expert beat
    a spread one in its home domain (see BENCHMARKS.md).
    """

    name = "pilot"
    Options = PilotOptions
    order = 0
    AGGREGATES = AGGREGATES
    DENSITY_TEMPERATURE = 0.1  # kernel width, in cosine similarity

    def __init__(self, systems, options, pilots: np.ndarray, pilot_experts: np.ndarray, pilot_sizes: np.ndarray,
                 **context):
        super().__init__(systems, options, **context)
        self.pilots = pilots
        self.pilot_experts = pilot_experts  # index into self.systems, one per pilot
        self.pilot_sizes = pilot_sizes  # training queries behind each pilot

    @classmethod
    def _fit(cls, data: RoutingData, options: PilotOptions, **context) -> PilotRouter:
        clusters = options.clusters
        pilots, owners, sizes = [], [], []
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (dataset, label) in enumerate(zip(data.datasets, data.labels, strict=True)):
            groups.setdefault((dataset, label), []).append(i)
        for (_, label), rows in sorted(groups.items()):
            members = data.vectors[rows]
            if clusters == 1 or len(rows) <= clusters:
                centroids, counts = members.mean(axis=0, keepdims=True), [len(rows)]
            else:
                from sklearn.cluster import KMeans

                km = KMeans(n_clusters=clusters, n_init=10, random_state=options.seed).fit(members)
                centroids, counts = km.cluster_centers_, np.bincount(km.labels_, minlength=clusters).tolist()
            pilots.append(centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
            owners += [data.systems.index(label)] * len(centroids)
            sizes += counts
        return cls(data.systems, options, np.concatenate(pilots).astype(np.float32), np.array(owners, dtype=np.int64),
                   np.array(sizes, dtype=np.float32), **context)

    def similarity(self, vectors: np.ndarray) -> np.ndarray:
        return cosines(vectors, self.pilots).max(axis=1)

    def _route(self, vectors: np.ndarray) -> Routing:
        sims = cosines(vectors, self.pilots)
        scores = np.full((len(vectors), len(self.systems)), -np.inf, dtype=np.float32)
        aggregate = self.settings.aggregate
        for j in range(len(self.systems)):
            mine = self.pilot_experts == j
            if not mine.any():
                continue
            part = sims[:, mine]
            if aggregate == "density":  # log of sum_p size_p * exp(sim_p / T): a kernel density of expert j's wins
                z = part / self.DENSITY_TEMPERATURE + np.log(self.pilot_sizes[mine])
                top = z.max(axis=1, keepdims=True)
                scores[:, j] = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
            elif aggregate == "weighted":
                weights = self.pilot_sizes[mine]
                scores[:, j] = part @ weights / weights.sum()
            else:
                scores[:, j] = part.mean(axis=1) if aggregate == "mean" else part.max(axis=1)
        if aggregate == "density":  # the densities' share per expert: P(expert | query) under the kernel model
            return Routing(self.systems, softmax(scores, temperature=1.0))
        return Routing(self.systems, softmax(scores))

    def arrays(self):
        return {"pilots": self.pilots, "pilot_experts": self.pilot_experts, "pilot_sizes": self.pilot_sizes}

    @classmethod
    def from_arrays(cls, systems, options, arrays, extra, **context):
        return cls(systems, options, arrays["pilots"], arrays["pilot_experts"], arrays["pilot_sizes"], **context)
