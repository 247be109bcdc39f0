import numpy as np
import pytest

from retriever.ranking.topk import rank, search


def test_rank_drops_self_hits_and_padding():
    doc_ids = ["q1", "d1", "d2", "d3"]
    scores = np.array([[0.9, 0.8, 0.7], [0.95, 0.5, -1.0]], dtype=np.float32)
    rows = np.array([[0, 1, 2], [3, 0, -1]])
    results = rank(["q1", "q2"], scores, rows, doc_ids, k=2)
    assert results == {"q1": {"d1": pytest.approx(0.8), "d2": pytest.approx(0.7)},
                       "q2": {"d3": pytest.approx(0.95), "q1": pytest.approx(0.5)}}


def test_search_arguments(toy_encoder, data_dir, tmp_path):
    from eval.data import open_dataset
    from retriever.index.faiss_index import build_index

    index = build_index(open_dataset(data_dir, "toy"), toy_encoder, tmp_path / "idx")
    vectors = toy_encoder.encode(["jazz"])
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        search(index, vectors, ["q"], k=0)
    with pytest.raises(ValueError, match="2 query ids for 1 query vectors"):
        search(index, vectors, ["q", "r"])
    with pytest.raises(ValueError, match=r"query vectors must have shape \(n, 32\), got \(1, 3\)"):
        search(index, np.ones((1, 3), dtype=np.float32), ["q"])
    assert len(search(index, vectors, ["q"], k=50)["q"]) == 20  # k larger than the corpus
    # A query whose id is a document id never retrieves that document.
    assert "jazz-1" not in search(index, vectors, ["jazz-1"], k=20)["jazz-1"]


def test_group_rows_splits_a_batch_by_system_once_each():
    from retriever.ranking.systems import group_rows

    groups = group_rows(["hybrid:a", None, "base", "hybrid:a", "base", None])
    assert list(groups.items()) == [(None, [1, 5]), ("base", [2, 4]), ("hybrid:a", [0, 3])]
    assert group_rows([]) == {}
