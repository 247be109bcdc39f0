import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_toy_dataset

import cli
from eval.data import open_dataset
from eval.runs import SplitRun, parse_system
from experts import TrainConfig, train_expert
from experts.routing import build_router, cached_routing_data, refresh_routers, routing_data
from retriever.expert_encoder import MultiExpertEncoder
from retriever.index import build_index
from retriever.router_dir import RouterDirectory
from retriever.router_retriever import RouterRetriever
from retriever.routers import ROUTERS, RoutingData, fit_router, load_router

FAST = dict(epochs=2, batch_size=2, learning_rate=5e-3, heldout_fraction=0.25, select_on_heldout=False)


def synthetic(seed=0, n=60, dim=8):
    """Three well-separated clusters labelled base / a / b, from datasets da / db."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:3]
    labels = ["base", "a", "b"]
    vectors, names, datasets = [], [], []
    for i in range(n):
        c = i % 3
        v = centres[c] + 0.05 * rng.standard_normal(dim)
        vectors.append(v / np.linalg.norm(v))
        names.append(labels[c])
        datasets.append("da" if c < 2 else "db")
    return RoutingData(np.array(vectors, dtype=np.float32), names, datasets, {"da": "a", "db": "b"},
                       ["base", "a", "b"])


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_router_contract(name, tmp_path):
    data = synthetic()
    router = ROUTERS[name].fit(data)
    routing = router.route(data.vectors)
    assert routing.experts == ["base", "a", "b"]
    assert routing.weights.shape == (60, 3)
    np.testing.assert_allclose(routing.weights.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(routing.confidence == routing.weights.max(axis=1))
    reloaded = load_router(router.save(tmp_path / name))
    np.testing.assert_allclose(reloaded.route(data.vectors).weights, routing.weights, atol=1e-6)
    assert reloaded.options == router.options
    if name != "fixed":
        with pytest.raises(ValueError, match=r"router expects base query vectors of shape \(n, 8\), got \(2, 3\)"):
            router.route(np.zeros((2, 3), dtype=np.float32))


def test_learned_routers_follow_the_clusters():
    data = synthetic()
    test = synthetic(seed=1)
    for name in ("pilot", "classifier"):
        assert ROUTERS[name].fit(data).route(test.vectors).choice == test.labels, name
    # The dataset router decides by source dataset: cluster "base" queries come from dataset da, whose expert is a.
    expected = ["a" if d == "da" else "b" for d in test.datasets]
    assert ROUTERS["dataset"].fit(data).route(test.vectors).choice == expected


def test_pilot_options():
    data = synthetic()
    for aggregate in ("density", "weighted", "mean", "max"):
        assert ROUTERS["pilot"].fit(data, aggregate=aggregate).route(data.vectors).choice == data.labels
    clustered = ROUTERS["pilot"].fit(data, clusters=2)
    assert len(clustered.pilots) == 6 and clustered.route(data.vectors).choice == data.labels
    assert clustered.pilot_sizes.sum() == len(data.labels)
    np.testing.assert_allclose(np.linalg.norm(clustered.pilots, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown aggregate 'median'; valid: density, weighted, mean, max"):
        ROUTERS["pilot"].fit(data, aggregate="median")


def test_weighted_pilots_outvote_small_groups():
    """An expert that wins a handful of queries everywhere must not beat the expert that wins a whole domain."""
    rng = np.random.default_rng(0)
    domain, elsewhere = np.eye(4)[0], np.eye(4)[1]

    def noisy(centre, n):
        v = centre + 0.3 * rng.standard_normal((n, 4))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    # Dataset d1: expert "a" wins 40 queries; "b" wins 2 odd ones. Dataset d2 (elsewhere): "b" wins all 40.
    vectors = np.vstack([noisy(domain, 40), noisy(domain, 2), noisy(elsewhere, 40)]).astype(np.float32)
    labels = ["a"] * 40 + ["b"] * 2 + ["b"] * 40
    data = RoutingData(vectors, labels, ["d1"] * 42 + ["d2"] * 40, {"d1": "a", "d2": "b"}, ["base", "a", "b"])
    queries = noisy(domain, 50).astype(np.float32)
    weighted = ROUTERS["pilot"].fit(data).route(queries).choice
    assert weighted.count("a") > 45


def three_domains(gain_elsewhere: float, n=30, dim=6, seed=0):
    """Datasets d1..d3 (orthogonal clusters) with experts a..c: each expert gains 0.3 nDCG over the base on its
    own dataset's queries and ``gain_elsewhere`` on the others'."""
    rng = np.random.default_rng(seed)
    experts = ["base", "a", "b", "c"]
    vectors, datasets, scores = [], [], []
    for d in range(3):
        v = np.eye(dim)[d] + 0.05 * rng.standard_normal((n, dim))
        vectors.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        datasets += [f"d{d + 1}"] * n
        row = [0.5] + [0.5 + (0.3 if j == d else gain_elsewhere) for j in range(3)]
        scores.append(np.tile(row, (n, 1)))
    scores = np.concatenate(scores)
    labels = [experts[int(np.argmax(row))] for row in scores]
    return RoutingData(np.concatenate(vectors).astype(np.float32), labels, datasets,
                       {"d1": "a", "d2": "b", "d3": "c"}, experts, scores)


def test_fallback_is_calibrated_on_domains_left_out():
    data = three_domains(gain_elsewhere=-0.3)
    router = fit_router("pilot", data, fallback="auto")
    assert 0.5 < router.options["min_confidence"] <= 1.0  # a new domain splits its vote among experts
    in_domain = router.route(data.vectors)
    assert in_domain.choice == data.labels
    new_domain = np.eye(6, dtype=np.float32)[3:]  # orthogonal to every pilot: no expert knows it
    routing = router.route(new_domain)
    assert routing.choice == ["base"] * 3 and np.all(routing.confidence < router.options["min_confidence"])
    # Where experts help everywhere, nothing falls back.
    assert fit_router("pilot", three_domains(gain_elsewhere=0.1), fallback="auto").options["min_confidence"] == 0.0
    fixed = fit_router("pilot", data, fallback=0.99)
    assert fixed.options == {**fixed.options, "fallback": 0.99, "min_confidence": 0.99}


def test_novelty_sends_queries_unlike_every_domain_to_the_base():
    """Confidence cannot flag a new domain close to no pilot (one expert still wins its softmax); similarity can."""
    data = three_domains(gain_elsewhere=-0.3)
    router = fit_router("pilot", data, novelty="auto")
    assert 0 < router.options["min_similarity"] < 0.9, router.options
    assert router.route(data.vectors).choice == data.labels
    new_domain = np.eye(6, dtype=np.float32)[3:] + 0.1 * np.eye(6, dtype=np.float32)[0]  # nearest: domain d1
    new_domain /= np.linalg.norm(new_domain, axis=1, keepdims=True)
    assert router.route(new_domain).choice == ["base"] * 3
    assert fit_router("pilot", data).route(new_domain).choice == ["a"] * 3  # without novelty: d1's expert
    assert fit_router("pilot", three_domains(gain_elsewhere=0.1), novelty="auto").options["min_similarity"] == 0.0
    assert fit_router("dataset", data, novelty=0.5).route(new_domain).choice == ["base"] * 3
    with pytest.raises(ValueError, match="the classifier router keeps no reference vectors to measure novelty"):
        fit_router("classifier", data, novelty="auto")
    with pytest.raises(ValueError, match="novelty must be 'none', 'auto' or a threshold in \\[0, 1\\), got 2"):
        fit_router("pilot", data, novelty=2)
    with pytest.raises(ValueError, match="novelty='auto' needs the routing data's per-query scores"):
        fit_router("pilot", synthetic(), novelty="auto")


def test_fallback_calibration_ignores_scores_on_training_queries():
    """An expert that gains only on the queries it was trained on must not look helpful in-domain."""
    data = three_domains(gain_elsewhere=-0.02, n=40, seed=1)
    rng = np.random.default_rng(0)
    vectors = data.vectors + 0.4 * rng.standard_normal(data.vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores, trained_on = data.scores.copy(), np.zeros(data.scores.shape, dtype=bool)
    for i, dataset in enumerate(data.datasets):
        own = data.experts.index(data.dataset_experts[dataset])
        if i % 4:
            trained_on[i, own] = True  # a training query: +0.3 over the base
        else:
            scores[i, own] = 0.4  # a new query: 0.1 below the base
    labels = [data.experts[int(np.argmax(row))] for row in scores]
    args = (vectors, labels, data.datasets, data.dataset_experts, data.experts, scores)
    naive = fit_router("pilot", RoutingData(*args), fallback="auto").options["min_confidence"]
    aware = fit_router("pilot", RoutingData(*args, trained_on), fallback="auto").options["min_confidence"]
    assert naive < 1.0 and aware == 1.0  # every query falls back: no expert helps a query it has not seen


def test_fallback_errors():
    data = three_domains(gain_elsewhere=-0.3)
    with pytest.raises(ValueError, match="fallback must be 'none', 'auto' or a threshold in \\[0, 1\\), got 'often'"):
        fit_router("pilot", data, fallback="often")
    with pytest.raises(ValueError, match="fallback='auto' needs the routing data's per-query scores"):
        fit_router("pilot", synthetic(), fallback="auto")
    with pytest.raises(ValueError, match="unknown router 'oracle'; available: pilot, classifier, dataset, fixed"):
        fit_router("oracle", data)


def test_density_is_not_diluted_by_an_experts_pilots_elsewhere():
    """Expert a wins 40 queries in domain D and 40 in domain E; the base wins 8 in D. A D query belongs to a:
    a mean over a's pilots halves its similarity (E is far away) and hands D to the base."""
    rng = np.random.default_rng(0)

    def noisy(centre, n):
        v = np.eye(4)[centre] + 0.05 * rng.standard_normal((n, 4))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    vectors = np.vstack([noisy(0, 40), noisy(0, 8), noisy(1, 40), noisy(2, 40)]).astype(np.float32)
    labels = ["a"] * 40 + ["base"] * 8 + ["a"] * 40 + ["b"] * 40
    datasets = ["D"] * 48 + ["E"] * 40 + ["F"] * 40
    data = RoutingData(vectors, labels, datasets, {"D": "a", "F": "b"}, ["base", "a", "b"])
    queries = noisy(0, 20).astype(np.float32)
    assert ROUTERS["pilot"].fit(data).route(queries).choice == ["a"] * 20  # density, the default
    assert ROUTERS["pilot"].fit(data, aggregate="weighted").route(queries).choice.count("base") > 15


def test_routing_data_validation():
    with pytest.raises(ValueError, match="labels name experts the router does not know: z"):
        RoutingData(np.zeros((1, 2)), ["z"], ["d"], {}, ["base"])


@pytest.fixture(scope="module")
def world(toy_encoder, tmp_path_factory):
    """Two toy datasets with an expert each, routing data and a pilot router in one router directory."""
    root = tmp_path_factory.mktemp("routing")
    for name in ("toy", "other"):
        write_toy_dataset(root / "beir", name=name)
    datasets = {n: open_dataset(root / "beir", n) for n in ("toy", "other")}
    indexes = {n: build_index(d, toy_encoder, root / "idx" / n) for n, d in datasets.items()}
    store = RouterDirectory(root / "router", toy_encoder.info, create=True)
    for seed, name in enumerate(("toy", "other")):
        trained = train_expert([(datasets[name], indexes[name])], toy_encoder, TrainConfig(seed=seed, **FAST))
        store.save(f"{name}-expert", trained.write, trained.meta())
    encoder = store.load_into(MultiExpertEncoder(toy_encoder))
    sources = [(datasets[n], indexes[n]) for n in ("toy", "other")]
    data = routing_data(sources, encoder, store, max_queries=100)
    info = {"datasets": ["toy", "other"], "max_queries": 100, "seed": 0}
    for kind in ("pilot", "classifier", "dataset"):
        build_router(store, kind, data, info)
    yield {"root": root, "store": store, "encoder": encoder, "datasets": datasets, "indexes": indexes,
           "sources": sources, "data": data}
    for name in list(encoder.names[1:]):
        encoder.remove(name)


def test_routing_labels_come_from_train_queries_only(world, monkeypatch):
    data = world["data"]
    assert data.experts == ["base", "other-expert", "toy-expert"]
    assert data.dataset_experts == {"toy": "toy-expert", "other": "other-expert"}
    assert len(data.labels) == 8  # 4 train queries in each toy dataset
    scores = json.loads((world["store"].root / "routing-data" / "toy" / "scores-base.json").read_text())
    assert len(scores["ndcg@10"]) == 4
    # Which scores were measured on an expert's own training queries: its train slice, never its held-out one.
    from experts.train import heldout_split

    assert data.trained_on.shape == data.scores.shape and not data.trained_on[:, 0].any()  # base: none
    for dataset, expert in data.dataset_experts.items():
        rows = [i for i, d in enumerate(data.datasets) if d == dataset]
        config = TrainConfig(**world["store"].info(expert)["training"]["hyperparameters"])
        _, train, heldout = heldout_split(world["datasets"][dataset], world["indexes"][dataset].doc_ids, "train",
                                          config)
        assert data.trained_on[rows, data.experts.index(expert)].sum() == len(train) and heldout
        other = [e for e in data.experts if e not in ("base", expert)]
        assert not data.trained_on[np.ix_(rows, [data.experts.index(e) for e in other])].any()

    from eval.data import Dataset

    real_split = Dataset.split

    def guarded(self, split):
        assert split != "test", "router building read the test split"
        return real_split(self, split)

    monkeypatch.setattr(Dataset, "split", guarded)
    import shutil
    shutil.rmtree(world["store"].root / "routing-data" / "other")
    routing_data(world["sources"], world["encoder"], world["store"], max_queries=100)


def test_label_ties_prefer_own_expert_then_base(world):
    data = cached_routing_data(world["store"], ["toy", "other"])
    folder = world["store"].root / "routing-data"
    for dataset in ("toy", "other"):
        per = {e: json.loads((folder / dataset / f"scores-{e}.json").read_text())["ndcg@10"] for e in data.experts}
        rows = [i for i, d in enumerate(data.datasets) if d == dataset]
        for k, i in enumerate(rows):
            best = max(per[e][k] for e in data.experts)
            winners = [e for e in data.experts if per[e][k] == best]
            own = f"{dataset}-expert"
            expected = own if own in winners else "base" if "base" in winners else winners[0]
            assert data.labels[i] == expected


def test_router_retriever_search(world):
    rr = RouterRetriever.load(world["store"].root, "pilot", model=str(world["store"].base.id))
    index = world["indexes"]["toy"]
    queries = {"a": "what is known about jazz", "b": "ocean tides and the moon", "c": "insulin"}
    results = rr.search(queries, k=3, index=index)
    assert [r.query_id for r in results] == ["a", "b", "c"]
    routing = rr.router.route(rr.encoder.encode(list(queries.values())))
    assert [r.expert for r in results] == routing.choice
    for r, conf in zip(results, routing.confidence, strict=True):
        assert len(r.hits) == 3 and 0 < r.confidence <= 1 and r.confidence == pytest.approx(float(conf))
    vectors = rr.encoder.encode_routed(list(queries.values()), routing.choice)
    from retriever.ranking import search

    expected = search(index, vectors, list(queries), k=3)
    assert [dict(r.hits) for r in results] == [expected[q] for q in queries]
    with pytest.raises(ValueError, match="no router 'nope' in .*; built: classifier, dataset, pilot"):
        RouterRetriever.load(world["store"].root, "nope", model=str(world["store"].base.id))


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


def test_adding_and_removing_experts_refits_routers(world, toy_encoder, tmp_path):
    import shutil

    root = shutil.copytree(world["store"].root, tmp_path / "router")
    store = RouterDirectory(root, toy_encoder.info)
    scores_before = {p: p.read_bytes() for p in (root / "routing-data").rglob("scores-*.json")}

    store.remove("other-expert")
    assert refresh_routers(store) == ["classifier", "dataset", "pilot"]  # no encoder: nothing is encoded
    for kind in ("pilot", "classifier", "dataset"):
        assert load_router(root / "routers" / kind).experts == ["base", "toy-expert"]

    trained = train_expert([(world["datasets"]["other"], world["indexes"]["other"])], toy_encoder,
                           TrainConfig(seed=5, **FAST))
    store.save("other-new", trained.write, trained.meta())
    encoder = store.load_into(MultiExpertEncoder(toy_encoder))
    try:
        sources = dict(zip(("toy", "other"), world["sources"], strict=True))
        refresh_routers(store, encoder, sources.__getitem__)
    finally:
        for name in encoder.names[1:]:
            encoder.remove(name)
    assert load_router(root / "routers" / "pilot").experts == ["base", "other-new", "toy-expert"]
    assert (root / "routing-data" / "other" / "scores-other-new.json").is_file()
    for path, content in scores_before.items():  # the kept experts' scores were reused, not recomputed
        if "other-expert" not in path.name:
            assert path.read_bytes() == content


def test_cli_router_commands(world, tmp_path, toy_model_dir):
    import shutil

    router = shutil.copytree(world["store"].root, tmp_path / "router")
    data_dir, model = str(world["root"] / "beir"), str(toy_model_dir)
    runner = CliRunner()
    common = ["--data-dir", data_dir, "--model", model, "--cache-dir", str(tmp_path / "cache")]
    built = runner.invoke(cli.main, ["-q", "build-router", *common, "--router", str(router), "--dataset", "toy",
                                     "--dataset", "other", "--kind", "pilot", "--kind", "classifier"])
    assert built.exit_code == 0, built.output
    assert "8 labelled queries" in built.output
    saved = json.loads((router / "routers" / "pilot" / "routing.json").read_text())["options"]
    assert saved["fallback"] == "none" and saved["min_confidence"] == 0  # the top expert, however unsure
    assert saved["novelty"] == "auto" and 0 <= saved["min_similarity"] < 1  # unless the query is unlike them all
    classifier = json.loads((router / "routers" / "classifier" / "routing.json").read_text())["options"]
    assert "novelty" not in classifier and "min_similarity" not in classifier
    auto = runner.invoke(cli.main, ["-q", "build-router", *common, "--router", str(router), "--dataset", "toy",
                                    "--dataset", "other", "--kind", "pilot", "--fallback", "auto"])
    assert auto.exit_code == 0, auto.output
    saved = json.loads((router / "routers" / "pilot" / "routing.json").read_text())["options"]
    assert saved["fallback"] == "auto" and 0 <= saved["min_confidence"] <= 1
    bad = runner.invoke(cli.main, ["-q", "build-router", *common, "--router", str(router), "--dataset", "toy",
                                   "--fallback", "1.5"])
    assert bad.exit_code == 2 and "'1.5' is not 'none', 'auto' or a number in [0, 1)" in bad.output
    bad = runner.invoke(cli.main, ["-q", "build-router", *common, "--router", str(router), "--dataset", "toy",
                                   "--novelty", "often"])
    assert bad.exit_code == 2 and "'often' is not 'none', 'auto' or a number in [0, 1)" in bad.output
    out = tmp_path / "pilot.json"
    for system in ("pilot", "instance-oracle", "expert:toy-expert"):
        result = runner.invoke(cli.main, ["-q", "evaluate", *common, "--router", str(router), "--dataset", "toy",
                                          "--system", system, "--output-json", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads(out.read_text())["results"][0]["system"] == system
    needs = runner.invoke(cli.main, ["-q", "evaluate", *common, "--dataset", "toy", "--system", "pilot"])
    assert needs.exit_code != 0 and "system 'pilot' needs a router directory (--router DIR)" in needs.output
    index_dir = tmp_path / "idx"
    runner.invoke(cli.main, ["-q", "index", *common, "--dataset", "toy", "--output", str(index_dir)])
    found = runner.invoke(cli.main, ["-q", "search", "--index", str(index_dir), "--router", str(router),
                                     "--model", model, "--query", "jazz music", "--json"])
    assert found.exit_code == 0, found.output
    line = json.loads(found.stdout.splitlines()[0])
    assert line["expert"] in ("base", "toy-expert", "other-expert") and len(line["hits"]) == 10
    removed = runner.invoke(cli.main, ["experts", "remove", "--router", str(router), "--model", model, "other-expert"])
    assert removed.exit_code == 0 and "refitted routers: classifier, dataset, pilot" in removed.output


def test_cli_choices_come_from_the_registry():
    build = next(p for p in cli.build_router.params if p.name == "kinds")
    assert list(build.type.choices) == [name for name in ROUTERS if name != "fixed"]


def test_cli_benchmark_trains_builds_evaluates_and_reuses(world, tmp_path, toy_model_dir):
    data_dir, model = str(world["root"] / "beir"), str(toy_model_dir)
    router = tmp_path / "router"
    args = ["-q", "benchmark", "--data-dir", data_dir, "--model", model, "--cache-dir", str(tmp_path / "cache"),
            "--router", str(router), "--expert-dataset", "toy", "--expert-dataset", "other",
            "--output-json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md"),
            "--plot", str(tmp_path / "b.png"), "--index-type", "hnsw"]
    first = CliRunner().invoke(cli.main, args)
    assert first.exit_code == 0, first.output
    assert sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "cache" / "indexes").iterdir()) == ["hnsw", "hnsw"]
    report = json.loads((tmp_path / "b.json").read_text())
    systems = {r["system"] for r in report["results"]}
    assert systems == {"base", "multitask", "pilot", "classifier", "dataset", "dataset-oracle", "instance-oracle",
                       "expert:toy", "expert:other"}
    assert {r["dataset"] for r in report["results"]} == {"toy", "other"}
    assert set(report["routing"]["pilot"]["confusion"]) == {"toy", "other"}
    assert 0 <= report["routing"]["pilot"]["accuracy"] <= 1
    markdown = (tmp_path / "b.md").read_text()
    assert "| system | toy | other | avg |" in markdown and "Routing accuracy" in markdown
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    trained = {p: p.stat().st_mtime_ns for p in router.glob("experts/*/adapter_model.safetensors")}
    assert len(trained) == 3
    second = CliRunner().invoke(cli.main, args)
    assert second.exit_code == 0, second.output
    assert {p: p.stat().st_mtime_ns for p in router.glob("experts/*/adapter_model.safetensors")} == trained
    assert json.loads((tmp_path / "b.json").read_text())["results"] == report["results"]
