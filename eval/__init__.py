"""Measuring: BEIR-layout data, metrics, evaluation runs and the comparison report. Imports only ``retriever``.

Training selects on held-out nDCG and routing labels are per-query nDCG, so measuring sits below building
(``experts`` imports ``eval``, never the reverse).

- ``data``    — typed, validated loading of corpus (plain or gzipped), queries and qrels.
- ``metrics`` — nDCG@10, Recall@100, MAP@100, MRR@10 via BEIR/pytrec_eval; per-query nDCG; TREC run files.
- ``runs``    — ``SplitRun``: every system (base, experts, routers, oracles) on one split, sharing vectors.
- ``report``  — the comparison's markdown tables and confusion PNG.
- ``expected_scores.json`` — measured scores that ``tests/test_realdata.py`` guards.

Tested in ``tests/test_data.py``, ``test_metrics.py``, ``test_runs.py``, ``test_realdata.py``.
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "DataError": "eval.data",
    "Dataset": "eval.data",
    "Document": "eval.data",
    "Split": "eval.data",
    "iter_corpus": "eval.data",
    "load_qrels": "eval.data",
    "load_queries": "eval.data",
    "load_query_file": "eval.data",
    "open_dataset": "eval.data",
    "Scores": "eval.metrics",
    "evaluate": "eval.metrics",
    "per_query_ndcg": "eval.metrics",
    "write_trec_run": "eval.metrics",
    "SYSTEMS": "eval.runs",
    "EvalResult": "eval.runs",
    "SplitRun": "eval.runs",
    "format_table": "eval.runs",
    "load_systems": "eval.runs",
    "parse_system": "eval.runs",
    "results_json": "eval.runs",
    "write_results_json": "eval.runs",
    "Comparison": "eval.report",
    "write_report": "eval.report",
    "merge_queries": "eval.data",
    "paired_bootstrap": "eval.metrics",
})
