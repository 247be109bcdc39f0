"""Evaluation runs: a system answers a dataset split's queries over the shared corpus index, BEIR scores it."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from eval.data import Dataset
from eval.metrics import Scores, evaluate
from retriever.experts import BASE_EXPERT, MultiExpertEncoder
from retriever.index import IndexConfig, ensure_index
from retriever.search import Results, search

__all__ = [
    "SYSTEMS", "EvalResult", "evaluate_system", "format_table", "parse_system", "results_json",
    "write_results_json",
]

logger = logging.getLogger(__name__)

SYSTEMS = ("base", "expert:NAME")
RETRIEVE_K = 100  # deep enough for Recall@100 and MAP@100


@dataclass(frozen=True)
class EvalResult:
    dataset: str
    split: str
    system: str
    scores: Scores
    results: Results

    def row(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "system": self.system, **self.scores.summary()}


def parse_system(system: str, experts: list[str] | None = None) -> str:
    """The expert that answers for ``system`` (``base`` or ``expert:NAME``); a clear error otherwise."""
    if system == BASE_EXPERT:
        return BASE_EXPERT
    if system.startswith("expert:"):
        name = system.split(":", 1)[1]
        if experts is not None and name not in experts:
            raise ValueError(f"unknown expert {name!r} in system {system!r}; available: {', '.join(experts)}")
        return name
    raise ValueError(f"unknown system {system!r}; available: {', '.join(SYSTEMS)}")


def evaluate_system(
    dataset: Dataset,
    split: str,
    system: str,
    encoder: MultiExpertEncoder,
    cache_dir: str | os.PathLike,
    index_config: IndexConfig | None = None,
    *,
    progress: bool = False,
) -> EvalResult:
    """Search ``split``'s judged queries with ``system`` over the dataset's cached corpus index and score it."""
    expert = parse_system(system, encoder.names)
    data = dataset.split(split)
    index = ensure_index(dataset, encoder.base, cache_dir, index_config, progress=progress)
    query_ids = list(data.queries)
    vectors = encoder.encode([data.queries[qid] for qid in query_ids], expert)
    results = search(index, vectors, query_ids, k=RETRIEVE_K)
    scores = evaluate(data.qrels, results)
    logger.info("%s/%s %s: nDCG@10 %.4f over %d queries", dataset.name, split, system, scores.ndcg_at_10,
                scores.queries)
    return EvalResult(dataset.name, split, system, scores, results)


def results_json(results: list[EvalResult]) -> dict:
    return {"results": [result.row() for result in results]}


def write_results_json(results: list[EvalResult], path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results_json(results), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
