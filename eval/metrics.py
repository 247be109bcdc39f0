"""Retrieval metrics through BEIR's ``EvaluateRetrieval`` (pytrec_eval), per-query scores and TREC runs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytrec_eval
from beir.retrieval.evaluation import EvaluateRetrieval

from retriever.storage.files import atomic_file

__all__ = ["Scores", "check_trec_field", "evaluate", "paired_bootstrap", "per_query_ndcg", "write_trec_run"]

Qrels = dict[str, dict[str, int]]
Results = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Scores:
    ndcg_at_10: float
    recall_at_100: float
    map_at_100: float
    mrr_at_10: float
    queries: int
    per_query_ndcg_at_10: dict[str, float]

    def summary(self) -> dict[str, float | int]:
        return {
            "ndcg@10": self.ndcg_at_10, "recall@100": self.recall_at_100,
            "map@100": self.map_at_100, "mrr@10": self.mrr_at_10, "queries": self.queries,
        }


def per_query_ndcg(qrels: Qrels, results: Results, k: int = 10) -> dict[str, float]:
    """nDCG@k of each judged query (a judged query with no results scores 0)."""
    measure = f"ndcg_cut_{k}"
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}"})
    scored = evaluator.evaluate({qid: results.get(qid, {}) for qid in qrels})
    return {qid: scored.get(qid, {}).get(measure, 0.0) for qid in qrels}


def evaluate(qrels: Qrels, results: Results) -> Scores:
    """nDCG@10, Recall@100, MAP@100 and MRR@10 as BEIR reports them, plus per-query nDCG@10.

    Self-hits must already be removed (``retriever.ranking.topk`` does), so BEIR is told not to remove them again.
    """
    results = {qid: results.get(qid, {}) for qid in qrels}
    ndcg, map_, recall, _ = EvaluateRetrieval.evaluate(qrels, results, [10, 100], ignore_identical_ids=False)
    mrr = EvaluateRetrieval.evaluate_custom(qrels, results, [10], metric="mrr")
    return Scores(
        ndcg_at_10=ndcg["NDCG@10"], recall_at_100=recall["Recall@100"], map_at_100=map_["MAP@100"],
        mrr_at_10=mrr["MRR@10"], queries=len(qrels), per_query_ndcg_at_10=per_query_ndcg(qrels, results),
    )


def check_trec_field(value: object, what: str) -> str:
    """``value`` if it can be one field of a TREC run line, which tools split on whitespace into exactly 6: a
    non-empty string with no space, tab, line break or other unprintable character; else a ValueError naming it."""
    if not isinstance(value, str) or not value or " " in value or not value.isprintable():
        raise ValueError(f"{what} {value!r} cannot be written to a TREC run: a field there is one word (no spaces, "
                         "tabs, line breaks or other unprintable characters)")
    return value


def write_trec_run(results: Results, path: str | os.PathLike, tag: str) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, ranks from 1, best first; every field is checked first
    (``check_trec_field``), so nothing is written for ids a line cannot hold."""
    check_trec_field(tag, "run tag")
    for qid, hits in results.items():
        check_trec_field(qid, "query id")
        for doc_id in hits:
            check_trec_field(doc_id, "document id")
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for qid, hits in results.items():
            ordered = sorted(hits.items(), key=lambda item: item[1], reverse=True)
            for rank_, (doc_id, score) in enumerate(ordered, start=1):
                handle.write(f"{qid} Q0 {doc_id} {rank_} {score:.6f} {tag}\n")


def paired_bootstrap(pairs: list[tuple[dict[str, float], dict[str, float]]], resamples: int = 2000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """``(difference, low, high)``: system A minus system B in the mean over datasets of mean per-query nDCG@10,
    with a 95% percentile interval from resampling each dataset's queries (with replacement, the same queries
    for both systems). ``pairs``: per dataset, both systems' per-query scores over the same query ids.
    (scipy's ``bootstrap(paired=True)`` resamples one sample; this stratifies by dataset.)"""
    rng = np.random.default_rng(seed)
    diffs = []
    for a, b in pairs:
        if set(a) != set(b) or not a:
            raise ValueError("paired bootstrap needs both systems' scores on the same, non-empty set of queries")
        diffs.append(np.array([a[q] - b[q] for q in sorted(a)]))
    observed = float(np.mean([d.mean() for d in diffs]))
    samples = np.zeros(resamples)
    for d in diffs:
        samples += d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    samples /= len(diffs)
    low, high = np.percentile(samples, [2.5, 97.5])
    return observed, float(low), float(high)
