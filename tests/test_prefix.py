"""Shared-prefix experts (``TrainConfig.lora_layers``) and routed search that reuses the base pass
(``MultiExpertEncoder.encode_keeping`` / ``resume``): LoRA only on the top layers, vectors equal to a full pass of
each expert, one mixed pass for several experts, thread-safe, and the facade's results equal evaluation's."""

import threading

import numpy as np
import pytest
from conftest import train_toy_experts

from experts import TrainConfig
from retriever.expert_encoder import MultiExpertEncoder
from retriever.lora import adapted_layers
from retriever.ranking import search

TEXTS = ["what is known about volcanoes", "jazz from new orleans and its history in the twentieth century",
         "blood sugar", "the moon and tides", "a", "why do whales sing to each other across the ocean at night"] * 6


@pytest.fixture(scope="module")
def experts(toy_encoder, tmp_path_factory):
    """A top-layer expert (the toy model has 2 layers: LoRA on layer 1 only) and an all-layer expert."""
    built = train_toy_experts(toy_encoder, tmp_path_factory.mktemp("prefix"),
                              {"top": {"lora_layers": 1, "seed": 3}, "all": {"lora_layers": 0, "seed": 3}})
    encoder = built["store"].load_into(MultiExpertEncoder(toy_encoder))
    yield {**built, "encoder": encoder}
    for name in ("top", "all"):
        encoder.remove(name)


def test_lora_on_the_top_layers_only(experts):
    store, encoder = experts["store"], experts["encoder"]
    assert adapted_layers(store.load_factors("top")) == {1}
    assert adapted_layers(store.load_factors("all")) == {0, 1}
    assert store.expert_info("top")["training"]["hyperparameters"]["lora_layers"] == 1
    assert (encoder.start_layer("top"), encoder.start_layer("all"), encoder.start_layer("base")) == (1, 0, 2)
    with pytest.raises(ValueError, match="lora_layers must be an integer >= 0"):
        TrainConfig(lora_layers=-1)


def test_resumed_vectors_equal_full_passes(experts):
    encoder = experts["encoder"]
    names = (["top", "base", "all", None, "top", "all"] * 6)[: len(TEXTS)]
    base, kept = encoder.encode_keeping(TEXTS, {0, 1})
    np.testing.assert_allclose(base, encoder.encode(TEXTS), atol=1e-6)
    resumed = encoder.resume(kept, names)
    for expert in ("top", "all"):
        rows = [i for i, n in enumerate(names) if n == expert]
        np.testing.assert_allclose(resumed[rows], encoder.encode([TEXTS[i] for i in rows], expert), atol=1e-5)
    assert not resumed[[i for i, n in enumerate(names) if n in ("base", None)]].any()
    assert not np.allclose(encoder.encode(TEXTS[:4], "top"), base[:4], atol=1e-4)  # the expert does change vectors
    with pytest.raises(ValueError, match="kept no hidden states entering layer 0"):
        encoder.resume(encoder.encode_keeping(TEXTS, {1})[1], names)
    with pytest.raises(ValueError, match="3 expert names for 36 kept texts"):
        encoder.resume(kept, names[:3])


def test_mixed_pass_is_thread_safe(experts):
    encoder = experts["encoder"]
    want = {name: encoder.encode(TEXTS, name) for name in ("top", "all")}
    barrier, failures = threading.Barrier(4), []

    def work(name):
        barrier.wait()
        for _ in range(3):
            _, kept = encoder.encode_keeping(TEXTS, {0, 1})
            got = encoder.resume(kept, [name] * len(TEXTS))
            if not np.allclose(got, want[name], atol=1e-5):
                failures.append(name)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("top", "all", "top", "all")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_routed_search_uses_each_experts_vectors(experts):
    from retriever.router_retriever import RouterRetriever
    from retriever.routers import FixedRouter

    encoder, index = experts["encoder"], experts["index"]
    queries = {f"q{i}": t for i, t in enumerate(TEXTS[:6])}
    for expert in ("top", "all", "base"):
        rr = RouterRetriever(encoder, FixedRouter(encoder.names, {"expert": expert}))
        hits = rr.search(queries, k=5, index=index)
        want = search(index, encoder.encode(list(queries.values()), expert), list(queries), k=5)
        assert [h.system for h in hits] == [expert] * 6
        for h in hits:
            assert [d for d, _ in h.hits] == list(want[h.query_id])
            assert dict(h.hits) == pytest.approx(want[h.query_id], abs=1e-5)
