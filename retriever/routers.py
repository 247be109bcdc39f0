"""Routers: base query vectors in, per-expert weights out. One interface, looked up by name in ``ROUTERS``.

- ``pilot``      — the paper's pilot-embedding library: each pilot is the base-encoder centroid of a group of
                   training queries that one expert answered best; a query goes to the expert with the largest
                   kernel density of its pilots, weighted by group size (``aggregate="weighted"``: the mean
                   similarity weighted by group size; ``"mean"``: the paper's unweighted mean; ``"max"``:
                   nearest pilot; ``clusters > 1``: k-means centroids per group).
- ``classifier`` — multinomial logistic regression on base query vectors, same best-expert labels.
- ``dataset``    — the nearest of at most ``per_dataset`` training queries decides, by its dataset's expert.
- ``fixed``      — always one expert (``base`` is the base model).

A router is fitted from ``RoutingData`` (training queries' base vectors, their best expert, their dataset) and
saved as JSON + ``.npy`` under ``<router dir>/routers/<name>/`` (no pickle; sklearn is used only to fit).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from retriever.artifacts import (
    ArtifactError,
    atomic_directory,
    checksum_files,
    load_npy,
    read_metadata,
    verify_checksums,
    write_json,
)

__all__ = [
    "FALLBACKS", "ROUTERS", "Router", "Routing", "RoutingData", "best_expert", "best_threshold", "calibrate_fallback",
    "calibrate_novelty", "fit_router", "fold_gains", "fold_score", "in_domain_folds", "load_router", "novelty_kinds",
    "router_names",
]

FORMAT_VERSION = 1
KIND = "routerretriever-routing-model"
SCHEMA = {"files": dict, "router": str, "experts": list, "options": dict, "state?": dict, "info?": dict}
BASE = "base"  # the base model (retriever.experts.BASE_EXPERT)
SOFTMAX_TEMPERATURE = 0.05  # turns cosine-similarity scores into weights, as the contrastive loss does


@dataclass(frozen=True)
class Routing:
    """Per-query routing decisions: ``weights[i, j]`` is query i's weight for ``experts[j]``; queries marked in
    ``fallback`` (the router's confidence was below its threshold) go to the base model."""

    experts: list[str]
    weights: np.ndarray
    fallback: np.ndarray | None = None

    @property
    def choice(self) -> list[str]:
        chosen = [self.experts[j] for j in self.weights.argmax(axis=1)]
        if self.fallback is None:
            return chosen
        return [BASE if back else expert for expert, back in zip(chosen, self.fallback, strict=True)]

    @property
    def confidence(self) -> np.ndarray:
        return self.weights.max(axis=1)


@dataclass(frozen=True)
class RoutingData:
    """Training queries for fitting a router. ``labels``: best expert per query; ``datasets``: its source."""

    vectors: np.ndarray
    labels: list[str]
    datasets: list[str]
    dataset_experts: dict[str, str]  # dataset -> its own expert
    experts: list[str]  # every expert the router may choose, "base" included
    scores: np.ndarray | None = None  # per-query nDCG@10 of each expert (columns: experts), for calibration
    trained_on: np.ndarray | None = None  # same shape, bool: the expert was trained on that query (optimistic)

    def __post_init__(self):
        if not (len(self.vectors) == len(self.labels) == len(self.datasets)):
            raise ValueError("vectors, labels and datasets must have the same length")
        if self.scores is not None and self.scores.shape != (len(self.vectors), len(self.experts)):
            raise ValueError(f"scores must have shape {(len(self.vectors), len(self.experts))}, "
                             f"got {self.scores.shape}")
        if self.trained_on is not None and (self.scores is None or self.trained_on.shape != self.scores.shape):
            raise ValueError("trained_on must come with scores and have their shape")
        unknown = sorted(set(self.labels) - set(self.experts))
        if unknown:
            raise ValueError(f"labels name experts the router does not know: {', '.join(unknown)}")


def _softmax(scores: np.ndarray, temperature: float = SOFTMAX_TEMPERATURE) -> np.ndarray:
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Router(ABC):
    """Routes base query vectors to experts. Subclasses set ``name`` and implement fit/route/state."""

    name: ClassVar[str]

    def __init__(self, experts: list[str], options: dict):
        self.experts = list(experts)
        self.options = dict(options)
        self.info: dict = {}  # what it was built from (datasets, sample size), as saved with it

    @classmethod
    @abstractmethod
    def fit(cls, data: RoutingData, **options) -> Router: ...

    @abstractmethod
    def _route(self, vectors: np.ndarray) -> Routing: ...

    def similarity(self, vectors: np.ndarray) -> np.ndarray | None:
        """Each query's highest cosine similarity to the router's reference vectors (its pilots, its stored
        training queries), or None for a router that keeps none: how far a query is from every known domain."""
        return None

    def route(self, vectors: np.ndarray) -> Routing:
        """Route base query vectors; a query below the fitted ``min_confidence``, or less similar than
        ``min_similarity`` to everything the router was fitted on, falls back to the base model."""
        routing = self._route(vectors)
        confidence = self.options.get("min_confidence", 0.0)
        similarity = self.options.get("min_similarity", 0.0)
        if BASE not in self.experts or not (confidence > 0 or similarity > 0):
            return routing
        back = routing.confidence < confidence
        if similarity > 0:
            back |= self.similarity(vectors) < similarity
        return Routing(routing.experts, routing.weights, back)

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The router's state as named arrays (saved as ``<name>.npy``)."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, experts: list[str], options: dict, arrays: dict[str, np.ndarray], extra: dict) -> Router: ...

    def extra(self) -> dict:
        """JSON-able state besides arrays."""
        return {}

    def save(self, path: str | Path, info: dict | None = None) -> Path:
        path = Path(path)
        with atomic_directory(path, ("routing.json", KIND)) as tmp:
            files = []
            for key, array in self.arrays().items():
                np.save(tmp / f"{key}.npy", np.ascontiguousarray(array), allow_pickle=False)
                files.append(f"{key}.npy")
            write_json(tmp / "routing.json", {
                "kind": KIND, "format_version": FORMAT_VERSION, "router": self.name, "experts": self.experts,
                "options": self.options, "state": self.extra(), "info": info or {},
                "files": checksum_files(tmp, files),
            })
        return path


def _check_dim(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"router expects base query vectors of shape (n, {dim}), got {vectors.shape}")
    return vectors


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
    AGGREGATES = ("density", "weighted", "mean", "max")
    DENSITY_TEMPERATURE = 0.1  # kernel width, in cosine similarity

    def __init__(self, experts, options, pilots: np.ndarray, pilot_experts: np.ndarray, pilot_sizes: np.ndarray):
        super().__init__(experts, options)
        self.pilots = pilots
        self.pilot_experts = pilot_experts  # index into self.experts, one per pilot
        self.pilot_sizes = pilot_sizes  # training queries behind each pilot

    @classmethod
    def fit(cls, data: RoutingData, aggregate: str = "density", clusters: int = 1, seed: int = 0) -> PilotRouter:
        if aggregate not in cls.AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; valid: {', '.join(cls.AGGREGATES)}")
        if not isinstance(clusters, int) or clusters < 1:
            raise ValueError(f"clusters must be a positive integer, got {clusters!r}")
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

                km = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit(members)
                centroids, counts = km.cluster_centers_, np.bincount(km.labels_, minlength=clusters).tolist()
            pilots.append(centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
            owners += [data.experts.index(label)] * len(centroids)
            sizes += counts
        options = {"aggregate": aggregate, "clusters": clusters, "seed": seed}
        return cls(data.experts, options, np.concatenate(pilots).astype(np.float32), np.array(owners, dtype=np.int64),
                   np.array(sizes, dtype=np.float32))

    def similarity(self, vectors: np.ndarray) -> np.ndarray:
        return (_check_dim(vectors, self.pilots.shape[1]) @ self.pilots.T).max(axis=1)

    def _route(self, vectors: np.ndarray) -> Routing:
        vectors = _check_dim(vectors, self.pilots.shape[1])
        sims = vectors @ self.pilots.T
        scores = np.full((len(vectors), len(self.experts)), -np.inf, dtype=np.float32)
        aggregate = self.options["aggregate"]
        for j in range(len(self.experts)):
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
            return Routing(self.experts, _softmax(scores, temperature=1.0))
        return Routing(self.experts, _softmax(scores))

    def arrays(self):
        return {"pilots": self.pilots, "pilot_experts": self.pilot_experts, "pilot_sizes": self.pilot_sizes}

    @classmethod
    def from_arrays(cls, experts, options, arrays, extra):
        return cls(experts, options, arrays["pilots"], arrays["pilot_experts"], arrays["pilot_sizes"])


class ClassifierRouter(Router):
    name = "classifier"

    def __init__(self, experts, options, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray):
        super().__init__(experts, options)
        self.coef, self.intercept, self.classes = coef, intercept, classes  # classes: index into experts

    @classmethod
    def fit(cls, data: RoutingData, c: float = 1.0, seed: int = 0) -> ClassifierRouter:
        from sklearn.linear_model import LogisticRegression

        y = np.array([data.experts.index(label) for label in data.labels])
        classes = np.unique(y)
        if len(classes) == 1:  # one label only: a constant router
            coef = np.zeros((1, data.vectors.shape[1]), dtype=np.float32)
            return cls(data.experts, {"c": c, "seed": seed}, coef, np.zeros(1, np.float32), classes)
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(data.vectors, y)
        coef, intercept = model.coef_, model.intercept_
        if len(classes) == 2:  # sklearn keeps one row for two classes: make it a two-way softmax
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(data.experts, {"c": c, "seed": seed}, coef.astype(np.float32), intercept.astype(np.float32),
                   model.classes_)

    def _route(self, vectors: np.ndarray) -> Routing:
        vectors = _check_dim(vectors, self.coef.shape[1])
        logits = vectors @ self.coef.T + self.intercept
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        weights = np.zeros((len(vectors), len(self.experts)), dtype=np.float32)
        weights[:, self.classes] = probs
        return Routing(self.experts, weights)

    def arrays(self):
        return {"coef": self.coef, "intercept": self.intercept, "classes": self.classes}

    @classmethod
    def from_arrays(cls, experts, options, arrays, extra):
        return cls(experts, options, arrays["coef"], arrays["intercept"], arrays["classes"])


class DatasetRouter(Router):
    name = "dataset"

    def __init__(self, experts, options, vectors: np.ndarray, owners: np.ndarray):
        super().__init__(experts, options)
        self.vectors, self.owners = vectors, owners

    @classmethod
    def fit(cls, data: RoutingData, per_dataset: int = 100, seed: int = 0) -> DatasetRouter:
        rng = np.random.default_rng(seed)
        keep, owners = [], []
        for dataset in sorted(set(data.datasets)):
            expert = data.dataset_experts.get(dataset)
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
        return (_check_dim(vectors, self.vectors.shape[1]) @ self.vectors.T).max(axis=1)

    def _route(self, vectors: np.ndarray) -> Routing:
        vectors = _check_dim(vectors, self.vectors.shape[1])
        sims = vectors @ self.vectors.T
        scores = np.full((len(vectors), len(self.experts)), -np.inf, dtype=np.float32)
        for j in np.unique(self.owners):
            scores[:, j] = sims[:, self.owners == j].max(axis=1)
        return Routing(self.experts, _softmax(scores))

    def arrays(self):
        return {"vectors": self.vectors, "owners": self.owners}

    @classmethod
    def from_arrays(cls, experts, options, arrays, extra):
        return cls(experts, options, arrays["vectors"], arrays["owners"])


class FixedRouter(Router):
    name = "fixed"

    @classmethod
    def fit(cls, data: RoutingData, expert: str = "base") -> FixedRouter:
        if expert not in data.experts:
            raise ValueError(f"unknown expert {expert!r}; available: {', '.join(data.experts)}")
        return cls(data.experts, {"expert": expert})

    def _route(self, vectors: np.ndarray) -> Routing:
        weights = np.zeros((len(vectors), len(self.experts)), dtype=np.float32)
        weights[:, self.experts.index(self.options["expert"])] = 1.0
        return Routing(self.experts, weights)

    def arrays(self):
        return {}

    @classmethod
    def from_arrays(cls, experts, options, arrays, extra):
        return cls(experts, options)


ROUTERS: dict[str, type[Router]] = {r.name: r for r in (PilotRouter, ClassifierRouter, DatasetRouter, FixedRouter)}
FALLBACKS = ("none", "auto")
THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.05), 2)  # candidate confidence thresholds for fallback="auto"
SIMILARITIES = np.round(np.arange(0.0, 0.5001, 0.025), 3)  # candidate similarity thresholds for novelty="auto"


def best_expert(scores: np.ndarray, experts: list[str], own: str | None) -> str:
    """The best-scoring expert of one query; ties go to its dataset's own expert, then ``base``, then list order."""
    preference = [p for p in dict.fromkeys([own, BASE, *experts]) if p in experts]
    return next(e for e in preference if scores[experts.index(e)] == scores.max())


def _threshold(name: str, value: str | float, calibrate) -> float:
    if value == "none":
        return 0.0
    if value == "auto":
        return calibrate()
    if isinstance(value, int | float) and 0 <= value < 1:
        return float(value)
    raise ValueError(f"{name} must be 'none', 'auto' or a threshold in [0, 1), got {value!r}")


def fit_router(kind: str, data: RoutingData, fallback: str | float = "none", novelty: str | float = "none",
               **options) -> Router:
    """Fit router ``kind``. Two ways to send a query to the base model instead, each ``"none"``, a threshold in
    [0, 1), or ``"auto"`` (chosen on the training data's folds, ``fold_gains``): ``fallback``, the router's
    confidence below which; ``novelty``, the similarity to the router's nearest reference vector (pilot,
    stored query) below which — a query unlike every training domain (routers without reference vectors:
    ``"none"`` only)."""
    if kind not in ROUTERS:
        raise ValueError(f"unknown router {kind!r}; available: {', '.join(ROUTERS)}")
    cls = ROUTERS[kind]
    if novelty != "none" and kind not in novelty_kinds():
        raise ValueError(f"the {kind} router keeps no reference vectors to measure novelty; use novelty='none'")
    parts = cache(lambda: fold_gains(cls, data, options))  # measured once, and only for an "auto" threshold
    min_confidence = _threshold("fallback", fallback, lambda: _calibrate(parts, data, "confidence", THRESHOLDS))
    min_similarity = _threshold("novelty", novelty, lambda: _calibrate(parts, data, "similarity", SIMILARITIES))
    router = cls.fit(data, **options)
    router.options.update(fallback=fallback, min_confidence=min_confidence)
    if kind in novelty_kinds():
        router.options.update(novelty=novelty, min_similarity=min_similarity)
    return router


def novelty_kinds() -> list[str]:
    """Routers that keep reference vectors, so ``novelty`` can send queries unlike all of them to the base."""
    return [name for name, cls in ROUTERS.items() if cls.similarity is not Router.similarity]


def _subset(data: RoutingData, rows: np.ndarray, drop: str | None = None) -> RoutingData:
    """Rows of ``data``; with ``drop``, that expert is removed and its queries relabelled among the rest."""
    experts = [e for e in data.experts if e != drop]
    columns = [data.experts.index(e) for e in experts]
    scores = data.scores[rows][:, columns]
    trained_on = None if data.trained_on is None else data.trained_on[rows][:, columns]
    datasets = [data.datasets[i] for i in np.flatnonzero(rows)]
    labels = [data.labels[i] for i in np.flatnonzero(rows)]
    if drop is not None:
        labels = [best_expert(row, experts, data.dataset_experts.get(d)) if label == drop else label
                  for row, d, label in zip(scores, datasets, labels, strict=True)]
    dataset_experts = {d: e for d, e in data.dataset_experts.items() if e != drop}
    return RoutingData(data.vectors[rows], labels, datasets, dataset_experts, experts, scores, trained_on)


def in_domain_folds(data: RoutingData) -> list[tuple[np.ndarray, np.ndarray]]:
    """``fold_gains``'s two in-domain folds as ``(fit rows, held-out rows)`` masks: alternate routing queries,
    held out only where no expert was trained on them (``data.trained_on``)."""
    folds = np.arange(len(data.datasets)) % 2
    unseen = np.ones(len(folds), bool) if data.trained_on is None else ~data.trained_on.any(axis=1)
    return [(folds != k, (folds == k) & unseen) for k in (0, 1)]


def fold_gains(cls: type[Router], data: RoutingData, options: dict) -> dict[str, tuple[np.ndarray, ...]]:
    """How router ``cls`` does on training queries it did not see: ``{setting: (confidence, similarity, gain,
    dataset)}``, one entry per held-out query (similarity: ``Router.similarity``, zeros for routers without), in
    two settings — in-domain (two folds of the routing data) and left out (each dataset left out in turn, with
    its own expert removed: queries from a domain that has no expert; only while another dataset has one).
    The gain of a routed query is its chosen expert's nDCG@10 minus the base model's. Where
    ``data.trained_on`` says an expert was trained on a query, that query is left out of the in-domain folds:
    an expert's score on its own training queries overstates what it does on new ones.
    """
    if data.scores is None:
        raise ValueError("measuring a router on folds needs the routing data's per-query scores (RoutingData.scores)")
    datasets = np.array(data.datasets)
    splits = [("in-domain", train, held, None) for train, held in in_domain_folds(data)]
    names = sorted(set(data.datasets))
    splits += [("left out", datasets != d, datasets == d, data.dataset_experts.get(d))
               for d in names if len(names) > 1 and any(o != d for o in data.dataset_experts)]
    base = data.experts.index(BASE)
    parts: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for setting, train, held, drop in splits:
        router = cls.fit(_subset(data, train, drop), **options)
        routing = router._route(data.vectors[held])
        similarity = router.similarity(data.vectors[held])
        chosen = [data.experts.index(e) for e in routing.choice]
        gain = data.scores[held, chosen] - data.scores[held, base]
        parts.setdefault(setting, []).append((routing.confidence, np.zeros(len(gain)) if similarity is None else
                                              similarity, gain, datasets[held]))
    return {setting: tuple(np.concatenate(p) for p in zip(*pieces, strict=True)) for setting, pieces in parts.items()}


def fold_score(parts: dict[str, tuple[np.ndarray, ...]], setting: str, threshold: float = 0.0,
               signal: str = "confidence") -> float:
    """Mean over datasets of the mean gain in ``setting``; queries whose ``signal`` (``confidence`` or
    ``similarity``) is below ``threshold`` go to the base (gain 0)."""
    confidence, similarity, gain, names = parts[setting]
    kept = np.where((confidence if signal == "confidence" else similarity) >= threshold, gain, 0.0)
    return float(np.mean([kept[names == d].mean() for d in np.unique(names)])) if len(kept) else 0.0


def calibrate_fallback(cls: type[Router], data: RoutingData, options: dict) -> float:
    """The confidence threshold (from ``THRESHOLDS``) below which sending a query to the base model helps most,
    on ``fold_gains``: the two settings weigh equally, a query below the threshold gains 0, ties go to the
    lower threshold."""
    return _calibrate(lambda: fold_gains(cls, data, options), data, "confidence", THRESHOLDS)


def calibrate_novelty(cls: type[Router], data: RoutingData, options: dict) -> float:
    """The similarity threshold (from ``SIMILARITIES``) below which sending a query to the base model helps most,
    on ``fold_gains``, as ``calibrate_fallback`` does for confidence."""
    return _calibrate(lambda: fold_gains(cls, data, options), data, "similarity", SIMILARITIES)


def _calibrate(parts: Callable[[], dict], data: RoutingData, signal: str, thresholds: np.ndarray) -> float:
    """``best_threshold`` on the fold gains that ``parts()`` measures (``fit_router`` shares them between its two
    thresholds)."""
    if data.scores is None:
        option = "fallback" if signal == "confidence" else "novelty"
        raise ValueError(f"{option}='auto' needs the routing data's per-query scores (RoutingData.scores)")
    return best_threshold(parts(), signal, thresholds)


def best_threshold(parts: dict[str, tuple[np.ndarray, ...]], signal: str, thresholds: np.ndarray) -> float:
    """The threshold on ``signal`` with the best ``fold_score``, the settings weighing equally (ties: lowest)."""
    values = [np.mean([fold_score(parts, setting, t, signal) for setting in parts]) for t in thresholds]
    return float(thresholds[int(np.argmax(values))])


def router_names() -> list[str]:
    return list(ROUTERS)


def load_router(path: str | Path) -> Router:
    path = Path(path)
    meta = read_metadata(path / "routing.json", KIND, FORMAT_VERSION, SCHEMA)
    cls = ROUTERS.get(meta["router"])
    if cls is None:
        raise ArtifactError(f"unknown router {meta['router']!r} in {path}; available: {', '.join(ROUTERS)}")
    if not meta["experts"] or not all(isinstance(e, str) for e in meta["experts"]):
        raise ArtifactError(f"{path / 'routing.json'}: 'experts' must be a non-empty list of names")
    verify_checksums(path, meta["files"])
    arrays = {Path(name).stem: load_npy(path / name) for name in meta["files"]}
    try:
        router = cls.from_arrays(meta["experts"], meta["options"], arrays, meta.get("state", {}))
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ArtifactError(f"router {path} is damaged: {type(err).__name__} {err}") from None
    router.info = meta.get("info", {})
    return router

