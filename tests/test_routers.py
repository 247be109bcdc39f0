"""Routers (``retriever.routers``): the contract every registered router passes, each router's behaviour on
synthetic routing data, and the thresholds calibrated on the routing folds."""

import json
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from retriever.routers import ROUTERS, RoutingData, RoutingSpace, fit_router, load_router, novelty_kinds
from retriever.routers.classifier import ClassifierOptions
from retriever.routers.dataset import DatasetOptions
from retriever.routers.fixed import FixedOptions
from retriever.routers.pilot import PilotOptions
from retriever.routers.settings import Calibration, FallbackRequests


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
    assert routing.systems == ["base", "a", "b"]
    assert routing.weights.shape == (60, 3)
    np.testing.assert_allclose(routing.weights.sum(axis=1), 1.0, atol=1e-5)
    one = router.route(data.vectors[5:6])  # a query is routed alike alone and in a batch
    np.testing.assert_allclose(one.weights, routing.weights[5:6], atol=1e-6)
    assert router.space is data.space  # fitted complete: it routes in the data's space
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
    assert {k: fixed.options[k] for k in ("fallback", "min_confidence")} == {"fallback": 0.99, "min_confidence": 0.99}
    assert fixed.route(new_domain).choice == ["base"] * 3
    confident = router.route(data.vectors)
    unsure = fixed.route(data.vectors)  # a higher threshold only ever sends more queries to the base
    assert np.all(unsure.unfamiliar >= confident.unfamiliar)
    assert unsure.choice == ["base" if c < 0.99 else e for c, e in zip(unsure.confidence, data.labels, strict=True)]


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
        own = data.systems.index(data.dataset_experts[dataset])
        if i % 4:
            trained_on[i, own] = True  # a training query: +0.3 over the base
        else:
            scores[i, own] = 0.4  # a new query: 0.1 below the base
    labels = [data.systems[int(np.argmax(row))] for row in scores]
    args = (vectors, labels, data.datasets, data.dataset_experts, data.systems, scores)
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
    with pytest.raises(ValueError, match="labels name systems the router does not know: z"):
        RoutingData(np.zeros((1, 2)), ["z"], ["d"], {}, ["base"])


@pytest.mark.parametrize("make, message", [
    (lambda: PilotOptions(aggregate="median"), "unknown aggregate 'median'; valid: density, weighted, mean, max"),
    (lambda: PilotOptions(clusters=0), "clusters must be a positive integer, got 0"),
    (lambda: PilotOptions(seed="1"), "seed must be an integer, got '1'"),
    (lambda: ClassifierOptions(c=0), "c must be a finite number > 0, got 0"),
    (lambda: DatasetOptions(per_dataset=-1), "per_dataset must be a positive integer, got -1"),
    (lambda: FixedOptions(expert=""), "expert must be an expert's name .*, got ''"),
    (lambda: PilotOptions.from_json({"aggregate": "max", "clusters": 1, "seed": 0, "k": 3}),
     "unknown router option 'k'; valid: aggregate, clusters, seed"),
    (lambda: DatasetOptions.from_json({"seed": 0}), "missing router option 'per_dataset'; valid: per_dataset, seed"),
    (lambda: FallbackRequests(fallback="often"),
     "fallback must be 'none', 'auto' or a threshold in \\[0, 1\\), got 'often'"),
    (lambda: FallbackRequests(novelty=1.0), "novelty must be 'none', 'auto' or a threshold in \\[0, 1\\), got 1.0"),
    (lambda: FallbackRequests(unfamiliar="bm25"), "unfamiliar must be one of auto, calibrated, got 'bm25'"),
    (lambda: Calibration(min_confidence=-0.1), "min_confidence must be a finite number >= 0 .*, got -0.1"),
    (lambda: Calibration(min_similarity=float("nan")), "min_similarity must be a finite number >= 0 .*, got nan"),
    (lambda: Calibration(default=""), "default must be a system name .*, got ''"),
    (lambda: Calibration(fold_gain={"mean": "high"}), "fold_gain must map fold settings to finite numbers"),
])
def test_settings_refuse_bad_values_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_settings_are_frozen_and_options_read_only():
    """A fitted router's settings cannot be changed in place (a change would not be saved, or would be saved
    without being fitted): ``recalibrated`` gives a changed copy."""
    data = three_domains(gain_elsewhere=-0.3)
    router = fit_router("pilot", data, novelty="auto")
    with pytest.raises(FrozenInstanceError):
        router.calibration.min_similarity = 0.0
    with pytest.raises(TypeError):
        router.options["min_similarity"] = 0.0
    far = np.eye(6, dtype=np.float32)[3:] + 0.1 * np.eye(6, dtype=np.float32)[0]
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    assert router.route(far).choice == ["base"] * 3
    lenient = router.recalibrated(min_similarity=0.0)
    assert lenient.route(far).choice == ["a"] * 3 and router.route(far).choice == ["base"] * 3
    assert lenient.options["min_similarity"] == 0.0 and router.options["min_similarity"] > 0


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_saved_router_saves_again_unchanged(name, tmp_path):
    """Fitted with calibrated fallbacks, saved, loaded and saved again: the same routing.json and the same
    routing (choices, fallbacks, default system)."""
    data = three_domains(gain_elsewhere=-0.3)
    novelty = "auto" if name in novelty_kinds() else "none"
    router = fit_router(name, data, fallback="auto", novelty=novelty)
    first = router.save(tmp_path / "first", info={"datasets": ["d1", "d2", "d3"]})
    loaded = load_router(first)
    second = loaded.save(tmp_path / "second", info=loaded.info)
    assert (first / "routing.json").read_text() == (second / "routing.json").read_text()
    queries = np.vstack([data.vectors, np.eye(6, dtype=np.float32)[3:]])
    for other in (loaded, load_router(second)):
        want, got = router.route(queries), other.route(queries)
        assert got.choice == want.choice and np.array_equal(got.unfamiliar, want.unfamiliar)
        np.testing.assert_allclose(got.weights, want.weights, atol=1e-6)


def test_routing_json_from_before_the_unfamiliar_policy_loads_as_written(tmp_path):
    """A routing.json written before ``unfamiliar`` and ``default`` existed: its options are read as written
    (nothing invented: the base is the default), route as they did, and are written back unchanged."""
    data = three_domains(gain_elsewhere=-0.3)
    path = fit_router("pilot", data, fallback=0.6).save(tmp_path / "old")
    meta = json.loads((path / "routing.json").read_text())
    meta["options"] = {"aggregate": "density", "clusters": 1, "seed": 0, "fallback": 0.6, "min_confidence": 0.6}
    (path / "routing.json").write_text(json.dumps(meta))
    old = load_router(path)
    assert dict(old.options) == meta["options"] and old.default == "base"
    resaved = json.loads((old.save(tmp_path / "again") / "routing.json").read_text())
    assert list(resaved["options"].items()) == list(meta["options"].items())
    new_domain = np.eye(6, dtype=np.float32)[3:]
    routing = old.route(new_domain)
    assert routing.choice == ["base"] * 3 and np.all(routing.confidence < 0.6)


def test_fit_router_takes_the_routing_space_from_the_data():
    data = three_domains(gain_elsewhere=-0.3)
    space = RoutingSpace.fitted(1, data.vectors)
    prefixed = RoutingData(space.vectors(data.vectors), data.labels, data.datasets, data.dataset_experts,
                           data.systems, data.scores, space=space)
    router = fit_router("dataset", prefixed, novelty="auto")
    assert router.space is space and router.fold_gain is not None and router.calibration.fold_gain == router.fold_gain
