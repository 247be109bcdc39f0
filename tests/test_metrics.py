import math
import re

import pytest

from eval.metrics import evaluate, per_query_ndcg, write_trec_run

QRELS = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}


def test_perfect_and_partial_rankings():
    results = {"q1": {"d1": 0.9, "d2": 0.8, "x": 0.1}, "q2": {"x": 0.9, "d3": 0.5}}
    scores = evaluate(QRELS, results)
    assert scores.per_query_ndcg_at_10["q1"] == pytest.approx(1.0)
    assert scores.per_query_ndcg_at_10["q2"] == pytest.approx(1 / math.log2(3))
    assert scores.ndcg_at_10 == pytest.approx((1.0 + 1 / math.log2(3)) / 2, abs=1e-5)
    assert scores.mrr_at_10 == pytest.approx((1.0 + 0.5) / 2, abs=1e-5)
    assert scores.recall_at_100 == pytest.approx(1.0)
    assert scores.queries == 2
    assert scores.summary()["ndcg@10"] == scores.ndcg_at_10


def test_query_without_results_scores_zero():
    scores = evaluate(QRELS, {"q1": {"d1": 1.0, "d2": 0.5}})
    assert scores.per_query_ndcg_at_10 == {"q1": pytest.approx(1.0), "q2": 0.0}
    assert scores.ndcg_at_10 == pytest.approx(0.5, abs=1e-5)
    assert per_query_ndcg(QRELS, {}) == {"q1": 0.0, "q2": 0.0}


def test_trec_run_file(tmp_path):
    path = tmp_path / "run.trec"
    write_trec_run({"q1": {"d2": 0.5, "d1": 0.9}}, path, tag="base")
    assert path.read_text().splitlines() == ["q1 Q0 d1 1 0.900000 base", "q1 Q0 d2 2 0.500000 base"]
    with pytest.raises(ValueError, match="run tag 'a b' cannot be written to a TREC run"):
        write_trec_run({}, path, tag="a b")
    for results, what, bad in (({"q 1": {"d1": 0.5}}, "query", "q 1"), ({"q1": {"d\n1": 0.5}}, "document", "d\n1")):
        with pytest.raises(ValueError, match=re.escape(f"{what} id {bad!r} cannot be written to a TREC run: a field")):
            write_trec_run(results, tmp_path / "bad.trec", tag="base")  # a line would not split into 6 fields
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]
