"""Evaluation: BEIR-layout data loading, metrics, evaluation runs and the paper-style comparison.

- ``data``       — typed, validated loading of corpus (plain or gzipped), queries and qrels.
- ``metrics``    — nDCG@10, Recall@100, MAP@100, MRR@10 via BEIR/pytrec_eval; per-query nDCG; TREC run files.
- ``benchmark``  — ``SplitRun``: every system (base, experts, routers, oracles) on one split, sharing vectors.
- ``comparison`` — train what is missing, build routers, evaluate everything, write tables, JSON and a PNG.
- ``expected_scores.json`` — measured scores that the real-data tests guard; ``bench_*.py`` — timing scripts.

Tested in ``tests/test_data.py``, ``tests/test_metrics.py``, ``tests/test_routing.py``, ``tests/test_realdata.py``.
"""

from eval.benchmark import SYSTEMS, EvalResult, SplitRun, format_table, parse_system, results_json, write_results_json
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
    "SplitRun",
    "evaluate",
    "format_table",
    "iter_corpus",
    "load_qrels",
    "load_queries",
    "open_dataset",
    "parse_system",
    "per_query_ndcg",
    "results_json",
    "write_results_json",
    "write_trec_run",
]
