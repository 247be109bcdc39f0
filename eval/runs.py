"""Evaluation runs: systems answer a dataset split's queries over the shared corpus index; BEIR scores them.

Systems (``SYSTEMS``): ``base``; ``expert:NAME``; ``multitask`` (the expert of that name, trained on every
train split); the routers ``pilot``, ``classifier``, ``dataset``; and, for evaluation only,
``dataset-oracle`` (the best single system per dataset, chosen on test) and ``instance-oracle`` (the best
system per query). Oracles and routers choose among systems: ``base``, the domain experts, ``bm25`` and each
one's hybrid (``retriever.ranking.systems``).

``SplitRun`` encodes each query once per expert and shares those vectors between every system evaluated on
the split, so a routed system or an oracle costs no extra encoding. Given a ``vector_cache`` folder and each
expert's weights key, it also keeps every expert's vectors of the whole split on disk, so a later run (a new
router, one retrained expert) encodes only what changed; one file per expert and split, a retrained expert's
new vectors replacing its old ones.

A whole run (loading the base model, opening each dataset's indexes) is a workflow:
``experts.workflows.evaluation.evaluate_systems`` (``evaluate``) and ``experts.workflows.benchmark``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eval.data import Dataset, SplitFiles
from eval.metrics import Scores, evaluate
from retriever.encoding.encoder import BASE_EXPERT
from retriever.index.base import LexicalSearch
from retriever.ranking.systems import (
    AUTO_PREFIX,
    BM25,
    FUSION_DEPTH,
    HYBRID,
    FusionSettings,
    auto,
    dense_part,
    group_rows,
    hybrid,
    is_auto,
    is_lexical,
    resolve,
    run_system,
    system_names,
)
from retriever.ranking.third_opinion import ThirdOpinion, third_opinion
from retriever.ranking.topk import Results, search, search_lexical
from retriever.routers import Router, buildable_kinds
from retriever.storage.files import json_text, load_npy, safe_name, save_npy, write_json

if TYPE_CHECKING:  # names only (torch, FAISS): system names and checks import without them (the CLI's --help)
    from retriever.encoding.expert_encoder import MultiExpertEncoder
    from retriever.index.faiss_index import CorpusIndex

__all__ = [
    "DEFAULT", "MULTITASK", "ORACLES", "ROUTED", "SYSTEMS", "EvalResult", "SplitRun", "check_systems",
    "display_name", "format_table", "load_systems", "parse_system", "results_json", "write_results_json",
]

logger = logging.getLogger(__name__)

MULTITASK = "multitask"
ROUTED = tuple(buildable_kinds())  # every router fitted from routing data, from the registry
ORACLES = ("dataset-oracle", "instance-oracle")
DEFAULT = "default"  # the router the routing folds favour (recorded in the router directory)
SYSTEMS = (BASE_EXPERT, "expert:NAME", MULTITASK, BM25, "hybrid:NAME", "auto:NAME", *ROUTED, DEFAULT, *ORACLES)
RETRIEVE_K = FUSION_DEPTH  # deep enough for Recall@100 and MAP@100, and what a hybrid fuses


@dataclass(frozen=True)
class EvalResult:
    dataset: str
    split: str
    system: str
    scores: Scores
    results: Results
    chosen: dict[str, str] | None = field(default=None, repr=False)  # query id -> system (routed, oracles)
    unfamiliar: frozenset[str] = frozenset()  # routed: the queries the router did not recognise (sent to its default)

    def row(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "system": self.system, **self.scores.summary()}


def parse_system(system: str) -> tuple[str, str | None]:
    """``(kind, system)``: kind ``fixed`` with the routing-space system name (``base``, an expert's name,
    ``bm25``, ``hybrid:<expert>``), a router name, ``default`` or an oracle; a clear error otherwise."""
    if system in (BASE_EXPERT, MULTITASK, BM25):
        return "fixed", system
    if is_auto(system) and len(system) > len(AUTO_PREFIX):
        return "fixed", auto(safe_name(system[len(AUTO_PREFIX):], "expert"))
    if system.startswith("expert:") and len(system) > len("expert:"):
        return "fixed", safe_name(system.split(":", 1)[1], "expert")
    if system.startswith(HYBRID) and len(system) > len(HYBRID):
        return "fixed", hybrid(safe_name(system[len(HYBRID):], "expert"))
    if system in ROUTED or system in ORACLES or system == DEFAULT:
        return system, None
    raise ValueError(f"unknown system {system!r}; available: {', '.join(SYSTEMS)}")


def display_name(system: str) -> str:
    """A routing-space system name as evaluation rows show it (an expert ``x`` is ``expert:x``)."""
    if system in (BASE_EXPERT, MULTITASK, BM25) or is_auto(system) or system.startswith(HYBRID):
        return system
    return f"expert:{system}"


def check_systems(systems: Sequence[str], router_dir: Path | None) -> None:
    """Fail before any model loads: an unknown system, or one that needs a router directory without one."""
    for system in systems:
        kind, name = parse_system(system)
        if router_dir is None and not (kind == "fixed" and dense_part(name) in (BASE_EXPERT, None)):
            raise ValueError(f"system {system!r} needs a router directory (--router DIR) holding the experts")


def load_systems(systems: Sequence[str], router_dir: Path | None, encoder: MultiExpertEncoder
                 ) -> tuple[dict[str, Router], list[str] | None, FusionSettings, dict[str, str]]:
    """Load into ``encoder`` the experts that ``systems`` need from the router directory, and the routers they
    name: ``(routers, candidates, hybrid fusion, {"default": router kind})`` for ``SplitRun`` (candidates:
    what oracles choose among)."""
    check_systems(systems, router_dir)
    if router_dir is None:
        return {}, None, FusionSettings(), {}
    from retriever.routers.directory import RouterDirectory

    store = RouterDirectory(router_dir, encoder.info)
    candidates = system_names(store.candidates())
    routers, names, aliases = {}, [], {}
    for system in systems:
        kind, name = parse_system(system)
        if kind == "fixed":
            expert = dense_part(name)
            names += [] if expert in (BASE_EXPERT, None) else [store.expert_path(expert).name]
        elif kind in ROUTED or kind == DEFAULT:
            if kind == DEFAULT:
                kind = aliases[DEFAULT] = store.default_router()
            routers[kind] = store.load_router(kind)
            names += [dense_part(s) for s in routers[kind].systems]
        else:  # an oracle: every system
            names += [dense_part(s) for s in candidates]
    store.load_into(encoder, [n for n in dict.fromkeys(names) if n not in (None, *encoder.names)])
    if DEFAULT not in aliases:  # for the results JSON only: a directory without one is not an error here
        with contextlib.suppress(ValueError):
            aliases[DEFAULT] = store.default_router()
    return routers, candidates, store.load_fusion(), aliases


def _load_vectors(path: Path) -> np.ndarray | None:
    """A cached ``.npy``, or None if it is missing or unreadable (then it is encoded and written again)."""
    if not path.exists():
        return None
    try:
        return load_npy(path)
    except (OSError, ValueError) as err:  # unreadable, or a NaN in it (load_npy)
        logger.warning("re-encoding %s: %s", path, err)
        return None


def _remove_stale(path: Path, expert: str) -> None:
    """Delete ``expert``'s other vector files beside ``path`` (earlier weights or query texts): the cache keeps
    one file per expert and split instead of growing with every retraining."""
    stale = re.compile(re.escape(expert) + r"-[0-9a-f]{16}\.npy")
    for other in path.parent.iterdir():
        if other != path and stale.fullmatch(other.name):
            other.unlink(missing_ok=True)


class SplitRun:
    """One dataset split over its corpus index (and its lexical index, for BM25 and hybrid systems), with each
    dense expert's query vectors and rankings computed once and shared by every system evaluated on it."""

    def __init__(self, dataset: Dataset | SplitFiles, split: str, encoder: MultiExpertEncoder, index: CorpusIndex,
                 routers: dict[str, Router] | None = None, candidates: Sequence[str] | None = None,
                 vector_cache: Path | None = None, expert_keys: dict[str, str] | None = None,
                 lexical: LexicalSearch | None = None, fusion: FusionSettings | None = None,
                 aliases: dict[str, str] | None = None):
        index.check_model(encoder.info)
        if lexical is not None:
            lexical.check_corpus(index)
        self.dataset, self.split, self.encoder, self.index, self.lexical = dataset, split, encoder, index, lexical
        self.data = dataset.split(split)
        self.query_ids = list(self.data.queries)
        self.texts = [self.data.queries[q] for q in self.query_ids]
        self.routers = routers or {}
        self.aliases = aliases or {}  # "default" -> the router it stands for
        self.fusion = fusion or FusionSettings()
        self.candidates = list(candidates) if candidates is not None else encoder.names  # for oracles
        if lexical is None:
            self.candidates = [c for c in self.candidates if not is_lexical(c)]
        self._vectors: dict[str, np.ndarray] = {}
        self._done: dict[str, np.ndarray] = {}
        self._prefix: dict[int, np.ndarray] = {}  # layer -> every query's mean-pooled base states entering it
        self._rankings: dict[str, Results] = {}  # dense expert or "bm25" -> per-query top RETRIEVE_K
        self._fixed: dict[str, EvalResult] = {}
        self._third: ThirdOpinion | None = None
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

    def routing_vectors(self, router: Router) -> np.ndarray:
        """What ``router`` routes every query of the split on (``Router.space``): base embeddings, or the routing
        vectors of its prefix space (the base's first layers, run once per layer)."""
        layer = router.space.layer
        if layer is None:
            return self.vectors(BASE_EXPERT)
        if layer not in self._prefix:
            self._prefix[layer] = self.encoder.prefix_means(self.texts, layer)
        return router.space.vectors(self._prefix[layer])

    def _ranking(self, source: str, rows: list[int]) -> Results:
        """The top ``RETRIEVE_K`` of dense expert ``source`` (or of ``bm25``) for ``rows``, computed once per query."""
        done = self._rankings.setdefault(source, {})
        todo = [i for i in rows if self.query_ids[i] not in done]
        if todo:
            ids = [self.query_ids[i] for i in todo]
            if source == BM25:
                done.update(search_lexical(self.lexical, [self.texts[i] for i in todo], ids, RETRIEVE_K))
            else:
                done.update(search(self.index, self.vectors(source, todo), ids, RETRIEVE_K))
        return {self.query_ids[i]: done[self.query_ids[i]] for i in rows}

    def system_results(self, system: str, rows: list[int] | None = None, fusion: FusionSettings | None = None
                       ) -> Results:
        """``system``'s ranking (routing-space name) of ``rows`` (all by default); hybrids fused as ``fusion``
        says (default: the run's)."""
        rows = list(range(len(self.query_ids))) if rows is None else list(rows)
        expert = dense_part(system)
        if expert is not None and expert not in self.encoder.names:
            raise ValueError(f"unknown expert {expert!r}; available: {', '.join(self.encoder.names)}")
        if is_lexical(system) and self.lexical is None:
            raise ValueError(f"system {system!r} needs the corpus's lexical (BM25) index")
        dense = None if expert is None else self._ranking(expert, rows)
        lexical = self._ranking(BM25, rows) if is_lexical(system) else None
        return run_system(system, [self.query_ids[i] for i in rows], dense, lexical, fusion or self.fusion,
                          RETRIEVE_K, self.third_opinion() if is_auto(system) else None)

    def third_opinion(self) -> ThirdOpinion:
        """The third ranker over this split's queries and index, as ``RouterRetriever.search`` consults it."""
        if self._third is None:
            self._third = third_opinion(self.encoder.base.model, self.index,
                                        dict(zip(self.query_ids, self.texts, strict=True)))
        return self._third

    def _scored(self, system: str, results: Results, chosen: dict[str, str] | None) -> EvalResult:
        scores = evaluate(self.data.qrels, results)
        logger.info("%s/%s %s: nDCG@10 %.4f", self.dataset.name, self.split, system, scores.ndcg_at_10)
        return EvalResult(self.dataset.name, self.split, system, scores, results, chosen)

    def fixed(self, system: str) -> EvalResult:
        """One system for every query (routing-space name: ``base``, an expert, ``bm25``, ``hybrid:<expert>``)."""
        if system not in self._fixed:
            self._fixed[system] = self._scored(display_name(system), self.system_results(system), None)
        return self._fixed[system]

    def routed(self, name: str, label: str | None = None) -> EvalResult:
        if name not in self.routers:
            raise ValueError(f"router {name!r} is not built; built: {', '.join(self.routers) or 'none'}")
        router = self.routers[name]
        routing = router.route(self.routing_vectors(router))
        choice = dict(zip(self.query_ids, routing.choice, strict=True))
        autos = {s: rows for s, rows in group_rows(routing.choice).items() if is_auto(s)}
        if autos:  # the queries sent to each auto system decide together, as in RouterRetriever.search
            dense = {q: hits for s, rows in autos.items() for q, hits in self._ranking(dense_part(s), rows).items()}
            choice = resolve(choice, dense, self._ranking(BM25, [i for rows in autos.values() for i in rows]),
                             self.third_opinion())
        results: Results = {}
        for system, rows in group_rows([choice[q] for q in self.query_ids]).items():
            results.update(self.system_results(system, rows, router.fusion))  # fused as the router's labels were
        results = {q: results[q] for q in self.query_ids}
        unfamiliar = frozenset(q for q, new in zip(self.query_ids, routing.unfamiliar, strict=True) if new)
        return replace(self._scored(label or name, results, choice), unfamiliar=unfamiliar)

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
        kind, name = parse_system(system)
        if kind == "fixed":
            return self.fixed(name)
        if kind == "dataset-oracle":
            return self.dataset_oracle()
        if kind == "instance-oracle":
            return self.instance_oracle()
        if kind == DEFAULT:
            return self.routed(self.aliases[DEFAULT], DEFAULT)
        return self.routed(kind)


def results_json(results: list[EvalResult]) -> dict:
    return {"results": [result.row() for result in results]}


def write_results_json(results: list[EvalResult], path: str | os.PathLike, extra: dict | None = None) -> None:
    """``{"results": [row, ...], **extra}`` as JSON at ``path`` (``-``: standard output)."""
    data = {**results_json(results), **(extra or {})}
    if str(path) == "-":
        sys.stdout.write(json_text(data))
    else:
        write_json(path, data)


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
