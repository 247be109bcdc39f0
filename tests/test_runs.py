"""Evaluation runs (``eval.runs``): routed systems and oracles share the query vectors; the vector cache."""

import numpy as np
import pytest

from eval.runs import SplitRun, parse_system
from retriever.routers import load_router


def test_oracles_and_routed_systems(world):
    encoder = world["encoder"]
    routers = {k: load_router(world["store"].root / "routers" / k) for k in ("pilot", "classifier", "dataset")}
    run = SplitRun(world["datasets"]["toy"], "test", encoder, world["indexes"]["toy"], routers,
                   ["base", "other-expert", "toy-expert"])
    fixed = {e: run.fixed(e) for e in ("base", "other-expert", "toy-expert")}
    dataset_oracle = run.run("dataset-oracle")
    assert dataset_oracle.scores.ndcg_at_10 == max(r.scores.ndcg_at_10 for r in fixed.values())
    instance = run.run("instance-oracle")
    for qid in run.query_ids:
        best = max(r.scores.per_query_ndcg_at_10[qid] for r in fixed.values())
        assert instance.scores.per_query_ndcg_at_10[qid] == pytest.approx(best)
    for kind in ("pilot", "classifier", "dataset"):
        routed = run.run(kind)
        assert set(routed.chosen) == set(run.query_ids)
        for qid, expert in routed.chosen.items():
            assert routed.results[qid] == fixed[expert].results[qid]
    with pytest.raises(ValueError, match="unknown system 'pilots'; available: base, expert:NAME, multitask"):
        parse_system("pilots")


def test_query_vector_cache_is_reused_and_keyed_by_expert_weights(world, tmp_path, monkeypatch):
    from experts.routing import expert_key

    encoder, store = world["encoder"], world["store"]
    keys = {name: expert_key(store, name) for name in encoder.names}
    args = (world["datasets"]["toy"], "test", encoder, world["indexes"]["toy"])
    first = SplitRun(*args, vector_cache=tmp_path, expert_keys=keys).fixed("toy-expert")
    assert len(list(tmp_path.rglob("toy-expert-*.npy"))) == 1

    def no_encoding(*_, **__):
        raise AssertionError("cached vectors were encoded again")

    with monkeypatch.context() as patch:
        patch.setattr(encoder, "encode", no_encoding)
        again = SplitRun(*args, vector_cache=tmp_path, expert_keys=keys).fixed("toy-expert")
    assert again.results == first.results
    (cached,) = tmp_path.rglob("toy-expert-*.npy")
    cached.write_bytes(b"not an array")  # a damaged cache file is encoded and written again
    assert SplitRun(*args, vector_cache=tmp_path, expert_keys=keys).fixed("toy-expert").results == first.results
    assert np.load(cached).shape == (len(first.results), encoder.dim)
    other_name = cached.with_name(f"toy-expert-v2-{'0' * 16}.npy")  # another expert whose name extends this one
    other_name.write_bytes(cached.read_bytes())
    changed = SplitRun(*args, vector_cache=tmp_path, expert_keys={**keys, "toy-expert": "retrained"})
    changed.fixed("toy-expert")  # new weights: a new file replaces the old one; other experts' files stay
    (replaced,) = tmp_path.rglob("toy-expert-????????????????.npy")
    assert replaced != cached and not cached.exists()
    assert other_name.exists()


