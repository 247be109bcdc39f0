"""Evaluation: BEIR-layout data loading, metrics, and evaluation runs.

- ``data``      — typed, validated loading of corpus (plain or gzipped), queries and qrels.
- ``metrics``   — nDCG@10, Recall@100, MAP@100, MRR@10 via BEIR/pytrec_eval; per-query nDCG; TREC run files.
- ``benchmark`` — evaluate a system on dataset splits over the cached shared index; result JSON and tables.
- ``expected_scores.json`` — measured scores that the real-data tests guard.

Tested in ``tests/test_data.py``, ``tests/test_metrics.py`` and ``tests/test_realdata.py``.
"""

from eval.benchmark import (
    SYSTEMS,
    EvalResult,
    evaluate_system,
    format_table,
    results_json,
    write_results_json,
)
from eval.data import DataError, Dataset, Document, Split, iter_corpus, load_qrels, load_queries, open_dataset
from eval.metrics import Scores, evaluate, per_query_ndcg, write_trec_run

__all__ = [
    "SYSTEMS",
    "DataError",
    "Dataset",
    "Document",
    "EvalResult",
    "Scores",
    "Split",
    "evaluate",
    "evaluate_system",
    "format_table",
    "iter_corpus",
    "load_qrels",
    "load_queries",
    "open_dataset",
    "per_query_ndcg",
    "results_json",
    "write_results_json",
    "write_trec_run",
]
