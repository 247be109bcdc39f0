"""Fitting a router with calibrated fallbacks: the routing folds and the thresholds chosen on them.

``fold_gains`` measures a router on training queries it did not see (two in-domain folds; each dataset left
out with its expert); ``fit_router`` uses it to choose ``fallback="auto"`` / ``novelty="auto"`` thresholds.
Only training queries are ever used (the routing data has no test split).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from retriever.ranking.systems import dense_part, hybrid
from retriever.routers.base import AUTO, BASE, ROUTERS, Router, RoutingData, best_expert, best_systems, novelty_kinds
from retriever.routers.settings import (
    FALLBACKS,
    UNFAMILIAR_POLICIES,
    Calibration,
    FallbackRequests,
    ThresholdRequest,
    UnfamiliarPolicy,
    check_threshold,
    check_unfamiliar,
)

__all__ = [
    "FALLBACKS", "SIMILARITIES", "THRESHOLDS", "UNFAMILIAR_POLICIES", "UnfamiliarPolicy", "best_threshold",
    "calibrate", "check_threshold", "default_candidates", "fit_router", "fold_gains", "fold_routings", "fold_score",
    "in_domain_folds", "routed_fold_gain", "without_expert",
]

THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.05), 2)  # candidate confidence thresholds for fallback="auto"
SIMILARITIES = np.round(np.arange(0.0, 0.5001, 0.025), 3)  # candidate similarity thresholds for novelty="auto"
# where queries the router does not recognise go (``UnfamiliarPolicy``): "auto" — auto:base
# (retriever.ranking.unfamiliar decides per corpus whether BM25 is trusted, per query where not), the base for
# routers without lexical systems; "calibrated" — whichever of base and hybrid:base the routing folds favour (one
# global choice, fitted on the training domains: before 2026-12-04)


def _threshold(name: str, value: str | float, calibrate) -> float:
    check_threshold(name, value)
    if value == ThresholdRequest.NONE:
        return 0.0
    if value == ThresholdRequest.AUTO:
        return calibrate()
    return float(value)


def fit_router(kind: str, data: RoutingData, fallback: str | float = "none", novelty: str | float = "none",
               unfamiliar: str = "auto", **options) -> Router:
    """Fit router ``kind``. Two ways to send a query to the default system instead, each ``"none"``, a threshold
    in [0, 1), or ``"auto"`` (chosen on the training data's folds, ``fold_gains``): ``fallback``, the router's
    confidence below which; ``novelty``, the similarity to the router's nearest reference vector (pilot,
    stored query) below which — a query unlike every training domain (routers without reference vectors:
    ``"none"`` only). ``unfamiliar`` (``UnfamiliarPolicy``) says what the default system is. The fallbacks are
    calibrated first (``calibrate``); the router is then fitted with them, complete."""
    if kind not in ROUTERS:
        raise ValueError(f"unknown router {kind!r}; available: {', '.join(ROUTERS)}")
    policy = check_unfamiliar(unfamiliar)
    cls = ROUTERS[kind]
    if novelty != "none" and kind not in novelty_kinds():
        raise ValueError(f"the {kind} router keeps no reference vectors to measure novelty; use novelty='none'")
    requests = FallbackRequests(fallback, policy, novelty if kind in novelty_kinds() else None)
    cls.Options(**options)  # the kind's options checked before any fold is fitted
    calibration = calibrate(cls, data, requests, options)
    return cls.fit(data, requests=requests, calibration=calibration, **options)


def calibrate(cls: type[Router], data: RoutingData, requests: FallbackRequests, options: dict) -> Calibration:
    """The ``Calibration`` of router ``cls`` (fitted with ``options``) for ``requests``: each threshold as given or,
    for ``"auto"``, chosen on the routing folds (measured once, and only then); the default system a fallback goes
    to; the router's gain on the folds (with per-query scores: what choosing the default router compares)."""
    parts = cache(lambda: fold_gains(cls, data, options))
    candidates = default_candidates(data, requests.unfamiliar)
    defaults = {}
    min_confidence = _threshold("fallback", requests.fallback,
                                lambda: _calibrate(parts, data, "confidence", THRESHOLDS, candidates, defaults))
    min_similarity = None if requests.novelty is None else _threshold(
        "novelty", requests.novelty, lambda: _calibrate(parts, data, "similarity", SIMILARITIES, candidates, defaults))
    # the default system a fallback goes to: the one calibrated with the threshold that sends queries there
    # (novelty's first); for thresholds given as numbers or none at all, the policy's first candidate
    signal = "similarity" if (min_similarity or 0.0) > 0 and "similarity" in defaults else \
        "confidence" if min_confidence > 0 and "confidence" in defaults else None
    default = defaults.get(signal, candidates[0])
    fold_gain = None if data.scores is None else routed_fold_gain(parts(), data, min_confidence,
                                                                  min_similarity or 0.0, default)
    return Calibration(min_confidence, min_similarity, default, fold_gain)


def routed_fold_gain(parts: dict[str, tuple[np.ndarray, ...]], data: RoutingData, min_confidence: float,
                     min_similarity: float, default: str) -> dict[str, float]:
    """Mean nDCG@10 gain over the base (x1) of a router with these fallbacks on ``fold_gains``' settings (mean
    over datasets), and ``mean`` of the settings."""
    fallen = data.system_scores(default) - data.system_scores(BASE)
    out = {}
    for setting, (confidence, similarity, gain, names, rows) in parts.items():
        back = (confidence < min_confidence) | (similarity < min_similarity)
        kept = np.where(back, fallen[rows], gain)
        out[setting] = float(np.mean([kept[names == d].mean() for d in np.unique(names)])) if len(kept) else 0.0
    out["mean"] = float(np.mean(list(out.values()))) if out else 0.0
    return {key: round(value, 6) for key, value in out.items()}


def _subset(data: RoutingData, rows: np.ndarray, drop: str | None = None) -> RoutingData:
    """Rows of ``data``; with ``drop``, that expert (and every system that uses it, its hybrid) is removed and
    its queries relabelled among the rest."""
    systems = [e for e in data.systems if drop is None or dense_part(e) != drop]
    columns = [data.systems.index(e) for e in systems]
    scores = data.scores[rows][:, columns]
    trained_on = None if data.trained_on is None else data.trained_on[rows][:, columns]
    datasets = [data.datasets[i] for i in np.flatnonzero(rows)]
    labels = [data.labels[i] for i in np.flatnonzero(rows)]
    dataset_experts = {d: e for d, e in data.dataset_experts.items() if e != drop}
    dataset_systems = None
    if data.dataset_systems is not None:  # judged again on these rows alone: held-out rows never choose it
        dataset_systems = best_systems(datasets, systems, scores, trained_on, dataset_experts)
        labels = [best_expert(row, systems, [dataset_systems.get(d), dataset_experts.get(d)])
                  for row, d in zip(scores, datasets, strict=True)]
    elif drop is not None:
        labels = [best_expert(row, systems, dataset_experts.get(d)) if label not in systems else label
                  for row, d, label in zip(scores, datasets, labels, strict=True)]
    auto = None if data.auto_scores is None else data.auto_scores[rows]
    return RoutingData(data.vectors[rows], labels, datasets, dataset_experts, systems, scores, trained_on,
                       dataset_systems, data.fusion, data.space, auto)


def without_expert(data: RoutingData, expert: str) -> RoutingData:
    """``data`` as if ``expert`` did not exist: its column and every system using it (its hybrid) removed, the
    queries relabelled among the rest (what leaving a domain out removes)."""
    return _subset(data, np.ones(len(data.datasets), bool), expert)


def in_domain_folds(data: RoutingData) -> list[tuple[np.ndarray, np.ndarray]]:
    """``fold_gains``'s two in-domain folds as ``(fit rows, held-out rows)`` masks: alternate routing queries,
    held out only where no expert was trained on them (``data.trained_on``)."""
    folds = np.arange(len(data.datasets)) % 2
    unseen = np.ones(len(folds), bool) if data.trained_on is None else ~data.trained_on.any(axis=1)
    return [(folds != k, (folds == k) & unseen) for k in (0, 1)]


def fold_routings(cls: type[Router], data: RoutingData, options: dict):
    """Router ``cls`` fitted and routing on ``fold_gains``' splits, one item per split: ``(setting, held-out row
    mask, the router fitted without them, its Routing of them)``."""
    datasets = np.array(data.datasets)
    splits = [("in-domain", train, held, None) for train, held in in_domain_folds(data)]
    names = sorted(set(data.datasets))
    splits += [("left out", datasets != d, datasets == d, data.dataset_experts.get(d))
               for d in names if len(names) > 1 and any(o != d for o in data.dataset_experts)]
    for setting, train, held, drop in splits:
        router = cls.fit(_subset(data, train, drop), **options)
        yield setting, held, router, router._route(data.vectors[held])


def fold_gains(cls: type[Router], data: RoutingData, options: dict) -> dict[str, tuple[np.ndarray, ...]]:
    """How router ``cls`` does on training queries it did not see: ``{setting: (confidence, similarity, gain,
    dataset, row)}``, one entry per held-out query (``row``: its row in ``data``; similarity:
    ``Router.similarity``, zeros for routers without), in two settings — in-domain (two folds of the routing
    data) and left out (each dataset left out in turn, with its own expert and the systems using it removed:
    queries from a domain that has no expert; only while another dataset has one). The gain of a routed query
    is its chosen system's nDCG@10 minus the base model's. Where ``data.trained_on`` says an expert was trained
    on a query, that query is left out of the in-domain folds: an expert's score on its own training queries
    overstates what it does on new ones.
    """
    if data.scores is None:
        raise ValueError("measuring a router on folds needs the routing data's per-query scores (RoutingData.scores)")
    datasets = np.array(data.datasets)
    base = data.systems.index(BASE)
    parts: dict[str, list[tuple[np.ndarray, ...]]] = {}
    for setting, held, router, routing in fold_routings(cls, data, options):
        similarity = router.similarity(data.vectors[held])
        chosen = [data.systems.index(e) for e in routing.choice]
        gain = data.scores[held, chosen] - data.scores[held, base]
        parts.setdefault(setting, []).append((routing.confidence, np.zeros(len(gain)) if similarity is None else
                                              similarity, gain, datasets[held], np.flatnonzero(held)))
    return {setting: tuple(np.concatenate(p) for p in zip(*pieces, strict=True)) for setting, pieces in parts.items()}


def fold_score(parts: dict[str, tuple[np.ndarray, ...]], setting: str, threshold: float = 0.0,
               signal: str = "confidence", fallback_gain: np.ndarray | None = None) -> float:
    """Mean over datasets of the mean gain in ``setting``; queries whose ``signal`` (``confidence`` or
    ``similarity``) is below ``threshold`` go to the default system: the base (gain 0), or the system whose gain
    over the base per routing-data row is ``fallback_gain``."""
    confidence, similarity, gain, names, rows = parts[setting]
    fallen = 0.0 if fallback_gain is None else fallback_gain[rows]
    kept = np.where((confidence if signal == "confidence" else similarity) >= threshold, gain, fallen)
    return float(np.mean([kept[names == d].mean() for d in np.unique(names)])) if len(kept) else 0.0


def default_candidates(data: RoutingData, unfamiliar: str = UnfamiliarPolicy.AUTO) -> list[str]:
    """Systems a fallback may send a query to under policy ``unfamiliar``: ``auto:base`` where the routing data
    scored it (routers over lexical systems), else the base; ``calibrated``: the base model, and the base hybrid
    where it is a system."""
    if unfamiliar == UnfamiliarPolicy.AUTO:
        return [AUTO] if data.auto_scores is not None and hybrid(BASE) in data.systems else [BASE]
    return [system for system in (BASE, hybrid(BASE)) if system in data.systems]


def _calibrate(parts: Callable[[], dict], data: RoutingData, signal: str, thresholds: np.ndarray,
               candidates: list[str], defaults: dict[str, str]) -> float:
    """``best_threshold`` on the fold gains that ``parts()`` measures (``fit_router`` shares them between its two
    thresholds), over each default system of ``candidates``; the default chosen is recorded in
    ``defaults[signal]``."""
    if data.scores is None:
        option = "fallback" if signal == "confidence" else "novelty"
        raise ValueError(f"{option}='auto' needs the routing data's per-query scores (RoutingData.scores)")
    best = None
    for default in candidates:  # ties: the first, then the lower threshold
        gain = data.system_scores(default) - data.system_scores(BASE)
        threshold, value = best_threshold(parts(), signal, thresholds, gain, with_value=True)
        if best is None or value > best[2]:
            best = (default, threshold, value)
    defaults[signal] = best[0]
    return best[1]


def best_threshold(parts: dict[str, tuple[np.ndarray, ...]], signal: str, thresholds: np.ndarray,
                   fallback_gain: np.ndarray | None = None, with_value: bool = False):
    """The threshold on ``signal`` with the best ``fold_score``, the settings weighing equally (ties: lowest);
    with ``with_value``, ``(threshold, its score)``."""
    values = [np.mean([fold_score(parts, setting, t, signal, fallback_gain) for setting in parts])
              for t in thresholds]
    best = int(np.argmax(values))
    return (float(thresholds[best]), float(values[best])) if with_value else float(thresholds[best])


