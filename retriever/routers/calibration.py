"""Fitting a router with calibrated fallbacks: the routing folds and the thresholds chosen on them.

``fold_gains`` measures a router on training queries it did not see (two in-domain folds; each dataset left
out with its expert); ``fit_router`` uses it to choose ``fallback="auto"`` / ``novelty="auto"`` thresholds.
Only training queries are ever used (the routing data has no test split).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from retriever.routers.base import BASE, ROUTERS, Router, RoutingData, best_expert, novelty_kinds

__all__ = [
    "FALLBACKS", "SIMILARITIES", "THRESHOLDS", "best_threshold", "fit_router", "fold_gains", "fold_score",
    "in_domain_folds",
]

FALLBACKS = ("none", "auto")
THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.05), 2)  # candidate confidence thresholds for fallback="auto"
SIMILARITIES = np.round(np.arange(0.0, 0.5001, 0.025), 3)  # candidate similarity thresholds for novelty="auto"



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


