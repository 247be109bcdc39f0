"""Shared-prefix experts (``TrainConfig.lora_layers``) and routed search that reuses the base pass
(``MultiExpertEncoder.encode_keeping`` / ``resume``): LoRA only on the top layers, vectors equal to a full pass of
each expert, one mixed pass for several experts, thread-safe, and the facade's results equal evaluation's."""

import threading

import numpy as np
import pytest
from conftest import train_toy_experts

from experts import TrainConfig
from retriever.encoding.expert_encoder import MultiExpertEncoder, length_batches
from retriever.encoding.lora import adapted_layers
from retriever.ranking.topk import search

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


def test_length_batches_keep_short_rows_apart_from_long_ones():
    assert [list(b) for b in length_batches([300, 250, 100, 90, 20, 10], 4, 32)] == [[0, 1], [2, 3], [4, 5]]
    assert [list(b) for b in length_batches([30] * 5, 2, 32)] == [[0, 1], [2, 3], [4]]
    assert length_batches([], 4, 32) == []


def test_long_and_short_queries_in_one_call_give_full_pass_vectors(experts):
    """A call mixing a long text with short ones: batches are cut by length (``length_batches``), and every vector
    still equals a full pass of its expert."""
    encoder = experts["encoder"]
    texts = [" ".join(["volcano eruption lava ash"] * 60), *TEXTS[:6], " ".join(["tides moon"] * 40)]
    names = ["top", "all", "base", "top", "all", "top", "base", "all"]
    base, kept = encoder.encode_keeping(texts, {0, 1})
    assert len(kept.batches) > 1  # the long texts were not padded together with the short ones
    np.testing.assert_allclose(base, encoder.encode(texts), atol=1e-6)
    resumed = encoder.resume(kept, names)
    for expert in ("top", "all"):
        rows = [i for i, n in enumerate(names) if n == expert]
        np.testing.assert_allclose(resumed[rows], encoder.encode([texts[i] for i in rows], expert), atol=1e-5)


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


def test_resume_after_a_prefix_pass_equals_full_passes(experts):
    """A prefix pass that stops at layer 1, then every row through the rest once: base rows run the base's
    upper layer, the top-layer expert resumes there, the all-layer expert from the embeddings."""
    encoder = experts["encoder"]
    names = (["top", "base", "all", None, "top", "base"] * 6)[: len(TEXTS)]
    base, kept = encoder.encode_keeping(TEXTS, {0}, stop=1)
    assert base is None and all(set(states) == {0, 1} for _, _, states in kept.batches)
    resumed = encoder.resume(kept, names, base_from=1)
    for expert in ("top", "all", "base"):
        rows = [i for i, n in enumerate(names) if n == expert]
        np.testing.assert_allclose(resumed[rows], encoder.encode([TEXTS[i] for i in rows], expert), atol=1e-5)
    assert not resumed[[i for i, n in enumerate(names) if n is None]].any()
    means = encoder.mean_states(kept, 1)
    assert means.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(encoder.prefix_means(TEXTS, 1), means, atol=1e-6)


def test_a_router_on_the_prefix_saves_its_space_and_searches_in_one_pass(experts, tmp_path):
    """A pilot fitted on prefix routing vectors (layer 1, centered): saved and loaded with its space, and routed
    search through the facade gives each query its chosen expert's full-pass ranking."""
    from retriever.router_retriever import RouterRetriever
    from retriever.routers import ROUTERS, RoutingData, RoutingSpace, load_router

    encoder, index = experts["encoder"], experts["index"]
    raw = encoder.prefix_means(TEXTS, 1)
    space = RoutingSpace.fitted(1, raw)
    vectors = space.vectors(raw)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(space.center, raw.mean(axis=0), atol=1e-6)
    labels = (["top", "all", "base"] * 12)[: len(TEXTS)]
    data = RoutingData(vectors, labels, ["toy"] * len(TEXTS), {}, ["base", "all", "top"], space=space)
    router = ROUTERS["pilot"].fit(data)  # routing in data.space, as fitted
    assert router.space is space
    loaded = load_router(router.save(tmp_path / "pilot"))
    assert loaded.space.layer == 1 and np.array_equal(loaded.space.center, space.center)
    queries = {f"q{i}": t for i, t in enumerate(TEXTS)}
    hits = RouterRetriever(encoder, loaded).search(queries, k=5, index=index)
    chosen = loaded.route(space.vectors(raw)).choice
    assert [h.system for h in hits] == chosen and len(set(chosen)) > 1
    for expert in set(chosen):
        rows = [i for i, c in enumerate(chosen) if c == expert]
        want = search(index, encoder.encode([TEXTS[i] for i in rows], expert), [f"q{i}" for i in rows], k=5)
        for i in rows:
            assert [d for d, _ in hits[i].hits] == list(want[f"q{i}"])
    from eval.runs import SplitRun  # evaluation routes on the same vectors as the facade

    run = SplitRun(experts["dataset"], "test", encoder, index, {"p": loaded}, ["base", "all", "top"])
    test_hits = RouterRetriever(encoder, loaded).search(dict(zip(run.query_ids, run.texts, strict=True)), index=index)
    assert list(run.routed("p").chosen.values()) == [h.system for h in test_hits]
    with pytest.raises(ValueError, match="a prefix routing space needs a layer >= 1, got 0"):
        RoutingSpace(0, space.center)
    with pytest.raises(ValueError, match="needs a finite 1-d center, got shape"):
        RoutingSpace(1, np.full(32, np.nan, dtype=np.float32))


@pytest.mark.parametrize("damage, message", [
    (lambda meta, center: meta.update(space={}), "'space' names no layer"),
    (lambda meta, center: np.save(center, np.zeros(5, dtype=np.float32)), "center has shape \\(5,\\)"),
    (lambda meta, center: np.save(center, np.full(32, np.nan, dtype=np.float32)),  # the loaders' finite check
     "space_center.npy holds a non-finite value \\(nan\\) at index 0"),
])
def test_a_damaged_routing_space_is_refused_on_load(tmp_path, damage, message):
    """A prefix router whose saved space does not fit its vectors is an ArtifactError naming the problem (the
    files re-checksummed, as a careless edit would leave them)."""
    import json

    from retriever.routers import ROUTERS, RoutingData, RoutingSpace, load_router
    from retriever.storage.files import ArtifactError, checksum_files

    rng = np.random.default_rng(0)
    raw = rng.standard_normal((12, 32)).astype(np.float32)
    space = RoutingSpace.fitted(1, raw)
    data = RoutingData(space.vectors(raw), ["a", "b", "base"] * 4, ["d"] * 12, {}, ["base", "a", "b"], space=space)
    router = ROUTERS["pilot"].fit(data)  # routing in data.space, as fitted
    assert router.space is space
    path = router.save(tmp_path / "pilot")
    meta = json.loads((path / "routing.json").read_text())
    damage(meta, path / "space_center.npy")
    meta["files"] = checksum_files(path, list(meta["files"]))
    (path / "routing.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message):
        load_router(path)


def test_build_router_routes_on_the_shared_prefix_when_asked(experts, tmp_path, toy_model_dir):
    """With top-layer experts only, ``build-router --route-on prefix`` fits routers on layer 1's pooled states
    (by default: on base embeddings), and ``search`` / ``evaluate`` route the same way."""
    import json
    import shutil

    from click.testing import CliRunner

    import cli

    router = shutil.copytree(experts["store"].root, tmp_path / "router")
    shutil.rmtree(router / "experts" / "all")
    common = ["--data-dir", str(experts["root"] / "beir"), "--model", str(toy_model_dir),
              "--cache-dir", str(tmp_path / "cache")]
    runner = CliRunner()
    built = runner.invoke(cli.main, ["-q", "build-router", *common, "--router", str(router), "--dataset", "toy",
                                     "--kind", "pilot", "--kind", "dataset", "--route-on", "prefix"],
                          catch_exceptions=False)
    assert built.exit_code == 0, built.output
    assert "routes on: pooled states entering layer 1, centered" in built.output
    for kind in ("pilot", "dataset"):
        assert json.loads((router / "routers" / kind / "routing.json").read_text())["space"] == {"layer": 1}
    found = runner.invoke(cli.main, ["-q", "search", "--router", str(router), "--model", str(toy_model_dir),
                                     "--index", str(tmp_path / "cache" / "indexes" / next(
                                         p.name for p in (tmp_path / "cache" / "indexes").iterdir()
                                         if p.name.endswith("-flat"))),
                                     "--query", "blood sugar", "--json"], catch_exceptions=False)
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout.splitlines()[0])["hits"]
    evaluated = runner.invoke(cli.main, ["-q", "evaluate", *common, "--router", str(router), "--dataset", "toy",
                                         "--system", "pilot", "--system", "dataset"], catch_exceptions=False)
    assert evaluated.exit_code == 0, evaluated.output
    plain = runner.invoke(cli.main, ["-q", "build-router", *common, "--router", str(router), "--dataset", "toy",
                                     "--kind", "pilot"], catch_exceptions=False)
    assert plain.exit_code == 0, plain.output
    assert "space" not in json.loads((router / "routers" / "pilot" / "routing.json").read_text())
    bad = runner.invoke(cli.main, ["-q", "build-router", *common, "--router", str(router), "--dataset", "toy",
                                   "--route-on", "layer7"])
    assert bad.exit_code == 2 and "Invalid value for '--route-on'" in bad.output
