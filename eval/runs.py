"""Evaluation runs: systems answer a dataset split's queries over the shared corpus index; BEIR scores them.

Systems (``SYSTEMS``): ``base``; ``expert:NAME``; ``multitask`` (the expert of that name, trained on every
train split); the routers ``pilot``, ``classifier``, ``dataset``; and, for evaluation only,
``dataset-oracle`` (the best single system per dataset, chosen on test) and ``instance-oracle`` (the best
system per query). Oracles and routers choose among ``base`` and the domain experts.

``SplitRun`` encodes each query once per expert and shares those vectors between every system evaluated on
the split, so a routed system or an oracle costs no extra encoding. Given a ``vector_cache`` folder and each
expert's weights key, it also keeps every expert's vectors of the whole split on disk, so a later run (a new
router, one retrained expert) encodes only what changed; one file per expert and split, a retrained expert's
new vectors replacing its old ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.data import Dataset
from eval.metrics import Scores, evaluate
from retriever.artifacts import atomic_file, safe_name, save_npy
from retriever.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.index import CorpusIndex
from retriever.ranking import Results, search
from retriever.router_dir import RouterDirectory
from retriever.routers import Router, buildable_kinds, load_router

__all__ = [
    "MULTITASK", "ORACLES", "ROUTED", "SYSTEMS", "EvalResult", "SplitRun", "format_table", "load_systems",
    "parse_system", "results_json", "write_results_json",
]

logger = logging.getLogger(__name__)

MULTITASK = "multitask"
ROUTED = tuple(buildable_kinds())  # every router fitted from routing data, from the registry
ORACLES = ("dataset-oracle", "instance-oracle")
SYSTEMS = ("base", "expert:NAME", MULTITASK, *ROUTED, *ORACLES)
RETRIEVE_K = 100  # deep enough for Recall@100 and MAP@100


@dataclass(frozen=True)
class EvalResult:
    dataset: str
    split: str
    system: str
    scores: Scores
    results: Results
    chosen: dict[str, str] | None = field(default=None, repr=False)  # query id -> expert (routed, oracles)

    def row(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "system": self.system, **self.scores.summary()}


def parse_system(system: str) -> tuple[str, str | None]:
    """``(kind, expert)``: kind is ``fixed`` (expert set), a router name, or an oracle; a clear error otherwise."""
    if system == BASE_EXPERT:
        return "fixed", BASE_EXPERT
    if system == MULTITASK:
        return "fixed", MULTITASK
    if system.startswith("expert:") and len(system) > len("expert:"):
        return "fixed", safe_name(system.split(":", 1)[1], "expert")
    if system in ROUTED or system in ORACLES:
        return system, None
    raise ValueError(f"unknown system {system!r}; available: {', '.join(SYSTEMS)}")


def load_systems(systems: Sequence[str], router_dir: Path | None, encoder: MultiExpertEncoder
                 ) -> tuple[dict[str, Router], list[str] | None]:
    """Load into ``encoder`` the experts that ``systems`` need from the router directory, and the routers they
    name: ``(routers, candidates)`` for ``SplitRun`` (candidates: what oracles choose among)."""
    parsed = [parse_system(system) for system in systems]
    if router_dir is None:
        for system, (kind, expert) in zip(systems, parsed, strict=True):
            if (kind, expert) != ("fixed", BASE_EXPERT):
                raise ValueError(f"system {system!r} needs a router directory (--router DIR) holding the experts")
        return {}, None
    store = RouterDirectory(router_dir, encoder.info)
    candidates = store.candidates()
    routers, names = {}, []
    for kind, expert in parsed:
        if kind == "fixed":
            names += [] if expert == BASE_EXPERT else [store.path(expert).name]
        elif kind in ROUTED:
            path = store.router_path(kind)
            if not (path / "routing.json").is_file():
                raise ValueError(f"router {kind!r} is not built in {router_dir}; run build-router first")
            routers[kind] = load_router(path)
            names += [e for e in routers[kind].experts if e != BASE_EXPERT]
        else:  # an oracle: every domain expert
            names += candidates[1:]
    store.load_into(encoder, [n for n in dict.fromkeys(names) if n not in encoder.names])
    return routers, candidates


def _load_vectors(path: Path) -> np.ndarray | None:
    """A cached ``.npy``, or None if it is missing or unreadable (then it is encoded and written again)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def _remove_stale(path: Path, expert: str) -> None:
    """Delete ``expert``'s other vector files beside ``path`` (earlier weights or query texts): the cache keeps
    one file per expert and split instead of growing with every retraining."""
    stale = re.compile(re.escape(expert) + r"-[0-9a-f]{16}\.npy")
    for other in path.parent.iterdir():
        if other != path and stale.fullmatch(other.name):
            other.unlink(missing_ok=True)


class SplitRun:
    """One dataset split over its corpus index, with per-expert query vectors computed once and shared."""

    def __init__(self, dataset: Dataset, split: str, encoder: MultiExpertEncoder, index: CorpusIndex,
                 routers: dict[str, Router] | None = None, candidates: Sequence[str] | None = None,
                 vector_cache: Path | None = None, expert_keys: dict[str, str] | None = None):
        index.check_model(encoder.info)
        self.dataset, self.split, self.encoder, self.index = dataset, split, encoder, index
        self.data = dataset.split(split)
        self.query_ids = list(self.data.queries)
        self.texts = [self.data.queries[q] for q in self.query_ids]
        self.routers = routers or {}
        self.candidates = list(candidates) if candidates is not None else encoder.names  # for oracles
        self._vectors: dict[str, np.ndarray] = {}
        self._done: dict[str, np.ndarray] = {}
        self._fixed: dict[str, EvalResult] = {}
        self.vector_cache, self.expert_keys = vector_cache, expert_keys or {}

    def _cached_path(self, expert: str) -> Path | None:
        """Where ``expert``'s vectors of every query of the split are kept, keyed by its weights and the texts."""
        if self.vector_cache is None or expert not in self.expert_keys:
            return None
        key = hashlib.sha256(json.dumps([self.expert_keys[expert], self.texts]).encode()).hexdigest()[:16]
        return Path(self.vector_cache) / f"{self.dataset.name}-{self.split}" / f"{expert}-{key}.npy"

    def vectors(self, expert: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Query vectors of ``expert`` for ``rows`` (all by default), encoding only rows not yet encoded."""
        n = len(self.query_ids)
        rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        if expert not in self._vectors:
            path = self._cached_path(expert)
            if path is None:  # encoded row by row as systems ask for them
                self._vectors[expert] = np.zeros((n, self.encoder.dim), dtype=np.float32)
                self._done[expert] = np.zeros(n, dtype=bool)
            else:  # the whole split, loaded or encoded once and saved
                cached = _load_vectors(path)
                if cached is None or cached.shape != (n, self.encoder.dim):  # missing or not this split's: encode
                    cached = self.encoder.encode(self.texts, expert)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    save_npy(path, cached)
                    _remove_stale(path, expert)
                self._vectors[expert], self._done[expert] = cached, np.ones(n, dtype=bool)
        todo = rows[~self._done[expert][rows]]
        if len(todo):
            self._vectors[expert][todo] = self.encoder.encode([self.texts[i] for i in todo], expert)
            self._done[expert][todo] = True
        return self._vectors[expert][rows]

    def _result(self, system: str, vectors: np.ndarray, chosen: dict[str, str] | None = None) -> EvalResult:
        results = search(self.index, vectors, self.query_ids, k=RETRIEVE_K)
        return self._scored(system, results, chosen)

    def _scored(self, system: str, results: Results, chosen: dict[str, str] | None) -> EvalResult:
        scores = evaluate(self.data.qrels, results)
        logger.info("%s/%s %s: nDCG@10 %.4f", self.dataset.name, self.split, system, scores.ndcg_at_10)
        return EvalResult(self.dataset.name, self.split, system, scores, results, chosen)

    def fixed(self, expert: str) -> EvalResult:
        if expert not in self.encoder.names:
            raise ValueError(f"unknown expert {expert!r}; available: {', '.join(self.encoder.names)}")
        if expert not in self._fixed:
            system = BASE_EXPERT if expert == BASE_EXPERT else MULTITASK if expert == MULTITASK else f"expert:{expert}"
            self._fixed[expert] = self._result(system, self.vectors(expert))
        return self._fixed[expert]

    def routed(self, name: str) -> EvalResult:
        if name not in self.routers:
            raise ValueError(f"router {name!r} is not built; built: {', '.join(self.routers) or 'none'}")
        choice = self.routers[name].route(self.vectors(BASE_EXPERT)).choice
        vectors = np.zeros((len(self.query_ids), self.encoder.dim), dtype=np.float32)
        for expert in set(choice):
            rows = np.array([i for i, e in enumerate(choice) if e == expert])
            vectors[rows] = self.vectors(expert, rows)
        return self._result(name, vectors, dict(zip(self.query_ids, choice, strict=True)))

    def dataset_oracle(self) -> EvalResult:
        best = max(self.candidates, key=lambda e: (self.fixed(e).scores.ndcg_at_10, e == BASE_EXPERT))
        result = self.fixed(best)
        return EvalResult(result.dataset, result.split, "dataset-oracle", result.scores, result.results,
                          dict.fromkeys(self.query_ids, best))

    def instance_oracle(self) -> EvalResult:
        per_system = {e: self.fixed(e) for e in self.candidates}
        chosen, results = {}, {}
        for qid in self.query_ids:  # ties go to the first candidate (base)
            best = max(self.candidates, key=lambda e: per_system[e].scores.per_query_ndcg_at_10[qid])
            chosen[qid], results[qid] = best, per_system[best].results[qid]
        return self._scored("instance-oracle", results, chosen)

    def run(self, system: str) -> EvalResult:
        kind, expert = parse_system(system)
        if kind == "fixed":
            return self.fixed(expert)
        if kind == "dataset-oracle":
            return self.dataset_oracle()
        if kind == "instance-oracle":
            return self.instance_oracle()
        return self.routed(kind)


def results_json(results: list[EvalResult]) -> dict:
    return {"results": [result.row() for result in results]}


def write_results_json(results: list[EvalResult], path: str | os.PathLike, extra: dict | None = None) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({**results_json(results), **(extra or {})}, indent=2) + "\n", encoding="utf-8")


def format_table(results: list[EvalResult]) -> str:
    """A fixed-width table, one row per (dataset, split, system)."""
    header = ("dataset", "split", "system", "nDCG@10", "R@100", "MAP@100", "MRR@10", "queries")
    rows = [
        (r.dataset, r.split, r.system, f"{r.scores.ndcg_at_10:.4f}", f"{r.scores.recall_at_100:.4f}",
         f"{r.scores.map_at_100:.4f}", f"{r.scores.mrr_at_10:.4f}", str(r.scores.queries))
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row):
        cells = zip(row, widths, strict=True)
        return "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(cells))

    lines = [line(row) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
