"""Routing labels and router building (``experts.routing``, ``experts.workflows``): labels from training
queries only, refitting on expert changes, the facade's routed search and the router CLI commands."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST

import cli
from experts import TrainConfig, train_expert
from experts.routing import cached_routing_data, refresh_routers, routing_data
from retriever.encoding.expert_encoder import MultiExpertEncoder
from retriever.ranking.systems import dense_part
from retriever.router_retriever import RouterRetriever
from retriever.routers import ROUTERS, SIMILARITIES, THRESHOLDS, load_router
from retriever.routers.directory import RouterDirectory


def test_routing_labels_come_from_train_queries_only(world, monkeypatch, tmp_path):
    data = world["data"]
    assert data.systems == ["base", "other-expert", "toy-expert"]
    assert data.dataset_experts == {"toy": "toy-expert", "other": "other-expert"}
    assert len(data.labels) == 8  # 4 train queries in each toy dataset
    scores = json.loads((world["store"].root / "routing-data" / "toy" / "scores-base.json").read_text())
    assert len(scores["ndcg@10"]) == 4
    # Which scores were measured on an expert's own training queries: its train slice, never its held-out one.
    from experts.train import heldout_split

    assert data.trained_on.shape == data.scores.shape and not data.trained_on[:, 0].any()  # base: none
    for dataset, expert in data.dataset_experts.items():
        rows = [i for i, d in enumerate(data.datasets) if d == dataset]
        config = TrainConfig(**world["store"].expert_info(expert)["training"]["hyperparameters"])
        _, train, heldout = heldout_split(world["datasets"][dataset], world["indexes"][dataset].doc_ids, "train",
                                          config)
        assert data.trained_on[rows, data.systems.index(expert)].sum() == len(train) and heldout
        other = [e for e in data.systems if e not in ("base", expert)]
        assert not data.trained_on[np.ix_(rows, [data.systems.index(e) for e in other])].any()

    from eval.data import Dataset

    real_split = Dataset.split

    def guarded(self, split):
        assert split != "test", "router building read the test split"
        return real_split(self, split)

    monkeypatch.setattr(Dataset, "split", guarded)
    import shutil

    store = copy_store(world, tmp_path)  # the module's world is shared: recompute in a copy
    shutil.rmtree(store.root / "routing-data" / "other")
    again = routing_data(world["sources"], world["encoder"], store, max_queries=100)
    assert again.labels == data.labels and np.array_equal(again.scores, data.scores)


def copy_store(world, tmp_path) -> RouterDirectory:
    """A copy of the module's router directory, for a test that changes it."""
    import shutil

    root = shutil.copytree(world["store"].root, tmp_path / "router-copy")
    return RouterDirectory(root, world["store"].base)


def test_label_ties_prefer_own_expert_then_base(world):
    data = cached_routing_data(world["store"], ["toy", "other"])
    folder = world["store"].root / "routing-data"
    for dataset in ("toy", "other"):
        per = {e: json.loads((folder / dataset / f"scores-{e}.json").read_text())["ndcg@10"] for e in data.systems}
        rows = [i for i, d in enumerate(data.datasets) if d == dataset]
        for k, i in enumerate(rows):
            best = max(per[e][k] for e in data.systems)
            winners = [e for e in data.systems if per[e][k] == best]
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
        assert len(r.hits) == 3 and r.confidence == pytest.approx(float(conf))
    vectors = rr.encoder.encode_each(list(queries.values()), routing.choice)
    from retriever.ranking.topk import search

    expected = search(index, vectors, list(queries), k=3)
    assert [dict(r.hits) for r in results] == [expected[q] for q in queries]
    with pytest.raises(ValueError, match=r"router 'nope' is not built in .* \(built: classifier, dataset, pilot\)"):
        RouterRetriever.load(world["store"].root, "nope", model=str(world["store"].base.id))


def test_adding_and_removing_experts_refits_routers(world, toy_encoder, tmp_path):
    import shutil

    root = shutil.copytree(world["store"].root, tmp_path / "router")
    store = RouterDirectory(root, toy_encoder.info)
    scores_before = {p: p.read_bytes() for p in (root / "routing-data").rglob("scores-*.json")}

    store.remove_expert("other-expert")
    assert refresh_routers(store) == ["classifier", "dataset", "pilot"]  # no encoder: nothing is encoded
    for kind in ("pilot", "classifier", "dataset"):
        assert load_router(root / "routers" / kind).systems == ["base", "toy-expert"]

    trained = train_expert([(world["datasets"]["other"], world["indexes"]["other"])], toy_encoder,
                           TrainConfig(seed=5, **FAST))
    store.save_expert("other-new", trained.write, trained.meta())
    encoder = store.load_into(MultiExpertEncoder(toy_encoder))
    try:
        sources = {ds.name: (ds, index, None) for ds, index in world["sources"]}  # dense-only routers: no BM25
        refresh_routers(store, encoder, lambda name, lexical: sources[name])
    finally:
        for name in encoder.names[1:]:
            encoder.remove(name)
    assert load_router(root / "routers" / "pilot").systems == ["base", "other-new", "toy-expert"]
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
    assert saved["novelty"] == "auto" and saved["min_similarity"] in SIMILARITIES  # calibrated on the folds
    classifier = json.loads((router / "routers" / "classifier" / "routing.json").read_text())["options"]
    assert "novelty" not in classifier and "min_similarity" not in classifier
    auto = runner.invoke(cli.main, ["-q", "build-router", *common, "--router", str(router), "--dataset", "toy",
                                    "--dataset", "other", "--kind", "pilot", "--fallback", "auto"])
    assert auto.exit_code == 0, auto.output
    saved = json.loads((router / "routers" / "pilot" / "routing.json").read_text())["options"]
    assert saved["fallback"] == "auto" and saved["min_confidence"] in THRESHOLDS  # calibrated on the folds
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
    routed = RouterRetriever.load(router, model=model)  # the CLI routes as the library does
    chosen = routed.router.route(routed.encoder.encode(["jazz music"])).choice[0]
    assert line["system"] == chosen or (chosen == "auto:base" and line["unfamiliar"])
    assert line["expert"] == dense_part(line["system"])
    assert len(line["hits"]) == 10
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
    cached = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "cache" / "indexes").iterdir())
    assert len(cached) == 4 and cached[0] == cached[1] and cached[0].endswith("-hnsw")  # dense: hnsw
    assert cached[2] == cached[3] and cached[2].startswith("bm25-")  # and a BM25 index for each corpus
    report = json.loads((tmp_path / "b.json").read_text())
    systems = {r["system"] for r in report["results"]}
    assert systems == {"base", "multitask", "bm25", "hybrid:base", "pilot", "classifier", "dataset", "default",
                       "dataset-oracle", "instance-oracle", "expert:toy", "expert:other", "hybrid:toy",
                       "hybrid:other"}
    assert report["default_system"] in ("pilot", "classifier", "dataset")
    assert set(report["fold_gains"]) == {"pilot", "classifier", "dataset"}
    assert set(report["fusion"]["weights"]) == {"hybrid:base", "hybrid:toy", "hybrid:other"}
    rows = {(r["dataset"], r["system"]): r["ndcg@10"] for r in report["results"]}
    for d in ("toy", "other"):  # "default" is the default router's rows; the oracle ranges over every system
        assert rows[d, "default"] == rows[d, report["default_system"]]
        assert rows[d, "instance-oracle"] >= max(v for (dd, s), v in rows.items() if dd == d and "oracle" not in s)
    assert {r["dataset"] for r in report["results"]} == {"toy", "other"}
    pilot = report["routing"]["pilot"]
    assert set(pilot["confusion"]) == {"toy", "other"}
    right = sum(n for d, counts in pilot["confusion"].items() for s, n in counts.items() if s in (d, f"hybrid:{d}"))
    total = sum(n for counts in pilot["confusion"].values() for n in counts.values())
    assert pilot["accuracy"] == round(right / total, 4)  # the share routed to their own dataset's expert
    markdown = (tmp_path / "b.md").read_text()
    assert "| system | toy | other | avg |" in markdown and "Routing accuracy" in markdown
    assert "The default router: " in markdown and "default - best [95% CI] | default - base [95% CI]" in markdown
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    trained = {p: p.stat().st_mtime_ns for p in router.glob("experts/*/adapter_model.safetensors")}
    assert len(trained) == 3
    second = CliRunner().invoke(cli.main, args)
    assert second.exit_code == 0, second.output
    assert {p: p.stat().st_mtime_ns for p in router.glob("experts/*/adapter_model.safetensors")} == trained
    assert json.loads((tmp_path / "b.json").read_text())["results"] == report["results"]


def test_routing_data_on_a_prefix_space(world, tmp_path):
    """``layer``: the routing vectors are the base's states entering that layer, mean-pooled and centered on the
    routing queries, cached beside the base vectors; a router fitted on them carries the space."""
    from experts.routing import build_router, prefix_layer
    from retriever.routers import RoutingSpace

    store = copy_store(world, tmp_path)  # routers are built into it: the module's world is shared
    assert prefix_layer(store, world["encoder"]) is None  # the toy experts adapt every layer: they route on embeddings
    with pytest.raises(ValueError, match="no current routing vectors prefix-1.npy"):
        cached_routing_data(store, ["toy", "other"], layer=1)
    data = routing_data(world["sources"], world["encoder"], store, max_queries=100, layer=1)
    assert isinstance(data.space, RoutingSpace) and data.space.layer == 1
    assert (store.root / "routing-data" / "toy" / "prefix-1.npy").is_file()
    np.testing.assert_allclose(np.linalg.norm(data.vectors, axis=1), 1, atol=1e-5)
    plain = cached_routing_data(store, ["toy", "other"])
    assert plain.space.layer is None and plain.labels == data.labels
    path = build_router(store, "dataset", data, {"datasets": ["toy", "other"], "max_queries": 100, "seed": 0})
    assert json.loads((path / "routing.json").read_text())["space"] == {"layer": 1}
    assert load_router(path).space.layer == 1
    assert "dataset" in refresh_routers(store) and load_router(path).space.layer == 1  # nothing encoded: kept
    build_router(store, "dataset", plain, {"datasets": ["toy", "other"], "max_queries": 100, "seed": 0})
    assert load_router(path).space.layer is None
