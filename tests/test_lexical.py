"""The lexical side (``retriever.index.lexical``), fusion and systems (``retriever.ranking.systems``), and routing among
systems: BM25 as bm25s ranks it, a self-describing cached index, hybrids fused one way everywhere, routers over
systems."""

import json
import os

import bm25s
import numpy as np
import pytest
from conftest import write_toy_dataset

from eval.data import open_dataset
from retriever.index.lexical import LexicalConfig, LexicalIndex, build_lexical_index, ensure_lexical_index
from retriever.ranking.systems import FusionSettings, dense_part, fuse, is_lexical, run_system, system_names
from retriever.ranking.topk import search_lexical
from retriever.storage.files import ArtifactError


@pytest.fixture
def toy(data_dir):
    return open_dataset(data_dir, "toy")


def test_bm25_ranks_as_bm25s_does(toy, tmp_path):
    index = build_lexical_index(toy, tmp_path / "bm25")
    docs = list(toy.corpus())
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    plain = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    plain.index(bm25s.tokenize([d.content() for d in docs], stopwords="en", stemmer=stemmer, show_progress=False),
                show_progress=False)
    query = "blue whale largest animal"
    rows, scores = plain.retrieve(bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False),
                                  k=5, show_progress=False)
    expected = {docs[r].id: float(s) for r, s in zip(rows[0], scores[0], strict=True) if s > 0}
    got = search_lexical(index, [query], ["q"], k=5)["q"]
    assert list(got) == list(expected) and got == pytest.approx(expected)
    assert list(got)[0].startswith("whale")


def test_lexical_index_describes_itself_and_is_verified(toy, tmp_path):
    index = build_lexical_index(toy, tmp_path / "bm25")
    meta = json.loads((tmp_path / "bm25" / "lexical.json").read_text())
    assert meta["kind"] == "routerretriever-lexical-index" and meta["count"] == 20
    assert meta["config"] == LexicalConfig().to_json() and len(meta["source"]["corpus_sha256"]) == 64
    assert set(meta["files"]) >= {"doc_ids.json", "params.index.json", "data.csc.index.npy"}
    assert LexicalIndex.load(tmp_path / "bm25").doc_ids == index.doc_ids
    with open(tmp_path / "bm25" / "vocab.index.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(ArtifactError, match="checksum mismatch for .*vocab.index.json"):
        LexicalIndex.load(tmp_path / "bm25")


def test_self_hits_and_no_shared_term(toy, tmp_path):
    index = build_lexical_index(toy, tmp_path / "bm25")
    hits = search_lexical(index, ["sourdough bread yeast", "zzzz qqqq"], ["bread-1", "nothing"], k=5)
    assert "bread-1" not in hits["bread-1"] and "bread-2" in hits["bread-1"]  # the query's own id never returned
    assert hits["nothing"] == {}  # no term in common: no match, not 5 arbitrary documents


def test_cache_reuses_and_rebuilds(toy, tmp_path, data_dir, caplog):
    first = ensure_lexical_index(toy, tmp_path / "cache")
    assert first.path.name.startswith("toy-bm25-") and first.path.parent.name == "indexes"
    assert ensure_lexical_index(toy, tmp_path / "cache").path == first.path
    (first.path / "lexical.json").write_text("[]")  # damaged: rebuilt with a warning
    again = ensure_lexical_index(toy, tmp_path / "cache")
    assert json.loads((again.path / "lexical.json").read_text())["count"] == 20
    assert any("rebuilding lexical index" in r.message for r in caplog.records)
    write_toy_dataset(tmp_path / "other-data", "toy")
    assert LexicalConfig(k1=1.2).key != LexicalConfig().key  # settings are part of the cache key


def test_bad_settings():
    with pytest.raises(ValueError, match="b must be a number in \\[0, 1\\], got 2"):
        LexicalConfig(b=2)
    with pytest.raises(ValueError, match="unknown BM25 method 'okapi'"):
        LexicalConfig(method="okapi")


def test_convex_fusion_and_rrf():
    dense = {"a": 0.9, "b": 0.5, "c": 0.1}
    lexical = {"c": 12.0, "d": 4.0}
    assert fuse(dense, lexical, 1.0) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.0}, abs=1e-5)
    mixed = fuse(dense, lexical, 0.5)
    assert mixed == pytest.approx({"a": 0.5, "c": 0.5, "b": 0.25, "d": 0.0}, abs=1e-5)
    assert list(mixed)[:2] == ["a", "c"]  # ties broken by doc id, best first,
    assert list(mixed.values()) == sorted(mixed.values(), reverse=True) and len(set(mixed.values())) == 4  # strictly
    from eval.metrics import per_query_ndcg

    assert per_query_ndcg({"q": {"a": 1}}, {"q": fuse({"a": 0.9, "c": 0.5}, {"b": 7, "d": 3}, 0.5, "rrf")})["q"] == 1.0
    rrf = fuse(dense, lexical, 0.0, "rrf")
    assert list(rrf)[0] == "c" and rrf["c"] == pytest.approx(1 / 63 + 1 / 61)
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        fuse(dense, lexical, 0.5, "max")


def test_system_names_and_run_system():
    assert system_names(["base", "x"]) == ["base", "x", "bm25", "hybrid:base", "hybrid:x"]
    assert [dense_part(s) for s in ("base", "x", "bm25", "hybrid:x")] == ["base", "x", None, "x"]
    assert [is_lexical(s) for s in ("base", "bm25", "hybrid:base")] == [False, True, True]
    dense = {"q": {"a": 2.0, "b": 1.0}}
    lexical = {"q": {"b": 3.0, "c": 1.0}}
    systems = FusionSettings("convex", {"hybrid:base": 0.2})
    assert run_system("base", ["q"], dense, None, systems, 1) == {"q": {"a": 2.0}}
    assert run_system("bm25", ["q"], None, lexical, systems, 5) == {"q": {"b": 3.0, "c": 1.0}}
    assert list(run_system("hybrid:base", ["q"], dense, lexical, systems, 3)["q"]) == ["b", "a", "c"]  # w 0.2
    with pytest.raises(ValueError, match="hybrid weight 'hybrid:x': 1.5"):
        FusionSettings("convex", {"hybrid:x": 1.5})


def test_routing_data_over_systems(lexical_world):
    data, store = lexical_world["data"], lexical_world["store"]
    assert data.systems == ["base", "other-expert", "toy-expert", "bm25", "hybrid:base", "hybrid:other-expert",
                            "hybrid:toy-expert"]
    assert data.scores.shape == (8, 7) and set(data.labels) <= set(data.systems)
    weights = store.load_fusion().weights
    assert set(weights) == {"hybrid:base", "hybrid:other-expert", "hybrid:toy-expert"}
    assert all(0 <= w <= 1 for w in weights.values())
    bm25 = json.loads((store.routing_data_path("toy") / "scores-bm25.json").read_text())
    assert len(bm25["ndcg@10"]) == 4 and bm25["base_model"]["fingerprint"] == store.base.fingerprint
    for kind in ("pilot", "classifier", "dataset"):  # every router knows its folds' gain; one is the default
        assert set(store.load_router(kind).info["fold_gain"]) == {"in-domain", "left out", "mean"}
    assert store.default_router() in ("pilot", "classifier", "dataset")


def test_routed_search_equals_evaluation(lexical_world, tmp_path):
    """The facade and evaluation rank every system the same way (one run_system)."""
    from eval.runs import SplitRun
    from retriever.router_retriever import RouterRetriever

    store = lexical_world["store"]
    rr = RouterRetriever.load(store.root, "default", model=str(store.base.id))
    assert rr.lexical
    dataset, index, lexical = (lexical_world[k]["toy"] for k in ("datasets", "indexes", "lexical"))
    split = dataset.split("test")
    hits = rr.search(split.queries, k=100, index=index, lexical=lexical)
    run = SplitRun(dataset, "test", rr.encoder, index, {"r": rr.router}, lexical=lexical, fusion=rr.fusion)
    routed = run.routed("r")
    assert {h.query_id: h.system for h in hits} == routed.chosen
    for h in hits:
        assert dict(h.hits) == pytest.approx(routed.results[h.query_id])
        assert h.mode in ("dense", "lexical", "hybrid")
    assert [h.hits for h in rr.search(split.queries, k=5, index=index)] == [h.hits[:5] for h in hits]  # idx-bm25
    import shutil

    from retriever.index.faiss_index import CorpusIndex

    lonely = CorpusIndex.load(shutil.copytree(index.path, lexical_world["root"] / "lonely"))
    with pytest.raises(ValueError, match="no lexical index was found beside .*lonely"):
        rr.search(split.queries, k=5, index=lonely)


def test_cli_evaluates_lexical_systems_and_the_default(lexical_world, tmp_path):
    from click.testing import CliRunner

    import cli

    store = lexical_world["store"]
    out = tmp_path / "r.json"
    args = ["-q", "evaluate", "--data-dir", str(lexical_world["root"] / "beir"), "--model", str(store.base.id),
            "--cache-dir", str(tmp_path / "cache"), "--dataset", "toy", "--output-json", str(out)]
    result = CliRunner().invoke(cli.main, [*args, "--system", "bm25", "--system", "hybrid:base", "--system",
                                           "auto:base", "--system", "base"])
    assert result.exit_code == 0, result.output  # no router directory needed for these
    rows = {r["system"]: r["ndcg@10"] for r in json.loads(out.read_text())["results"]}
    assert rows["auto:base"] in (rows["hybrid:base"], rows["base"])  # every query unfamiliar: one of the two
    result = CliRunner().invoke(cli.main, [*args, "--router", str(store.root), "--system", "default",
                                           "--system", "hybrid:toy-expert", "--system", "instance-oracle"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["default_system"] == store.default_router()
    rows = {r["system"]: r["ndcg@10"] for r in report["results"]}
    assert set(rows) == {"default", "hybrid:toy-expert", "instance-oracle"}
    assert rows["instance-oracle"] >= max(rows["default"], rows["hybrid:toy-expert"])
    result = CliRunner().invoke(cli.main, [*args, "--system", "hybrid:toy-expert"])
    assert result.exit_code == 1 and "needs a router directory" in result.output


def test_unfamiliar_queries_go_to_auto_unless_the_old_calibration_is_asked_for(lexical_world):
    from retriever.routers import fit_router

    data = lexical_world["data"]
    router = fit_router("pilot", data, novelty="auto")
    assert router.options["default"] == "auto:base" and router.options["unfamiliar"] == "auto"
    assert router.fold_gain["mean"] == pytest.approx(
        np.mean([router.fold_gain["in-domain"], router.fold_gain["left out"]]), abs=1e-5)
    old = fit_router("pilot", data, novelty="auto", unfamiliar="calibrated")
    assert old.options["default"] in ("base", "hybrid:base")
    with pytest.raises(ValueError, match="unfamiliar must be one of auto, calibrated, got 'bm25'"):
        fit_router("pilot", data, novelty="auto", unfamiliar="bm25")


def test_directory_without_its_default_router_still_evaluates(lexical_world, tmp_path):
    """A router directory from before default routers (none recorded, no pilot built) evaluates what it has."""
    import shutil

    from click.testing import CliRunner

    import cli

    root = shutil.copytree(lexical_world["store"].root, tmp_path / "router")
    shutil.rmtree(root / "routers" / "pilot")
    meta = json.loads((root / "router.json").read_text())
    meta.pop("default_router", None)
    (root / "router.json").write_text(json.dumps(meta))
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli.main, [
        "-q", "evaluate", "--data-dir", str(lexical_world["root"] / "beir"), "--model",
        str(lexical_world["store"].base.id), "--cache-dir", str(tmp_path / "cache"), "--dataset", "toy",
        "--router", str(root), "--system", "classifier", "--output-json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["default_system"] is None
    result = CliRunner().invoke(cli.main, [
        "-q", "evaluate", "--data-dir", str(lexical_world["root"] / "beir"), "--model",
        str(lexical_world["store"].base.id), "--cache-dir", str(tmp_path / "cache"), "--dataset", "toy",
        "--router", str(root), "--system", "default"])
    assert result.exit_code == 1 and "the default router 'pilot'" in result.output and "not built" in result.output


def test_top_agreement_and_trust():
    from retriever.ranking.unfamiliar import MIN_AGREEMENT, PRIOR_QUERIES, top_agreement, trusts_lexical

    assert top_agreement({"a": 2.0, "b": 1.0}, {"a": 9.0, "c": 1.0}) == 1.0  # same first document
    assert top_agreement({"a": 2.0, "b": 1.0}, {"b": 9.0, "a": 1.0}) == pytest.approx(0.5)  # each other's second
    assert top_agreement({"a": 2.0, "b": 1.0}, {"c": 9.0, "d": 1.0}) == 0.0
    assert top_agreement({"a": 2.0}, {}) is None  # BM25 matched nothing: no evidence either way
    assert not trusts_lexical([1.0])  # one query is not evidence enough, however it agrees
    enough = int(np.ceil(MIN_AGREEMENT * PRIOR_QUERIES / (1 - MIN_AGREEMENT)))  # queries in full agreement needed
    assert trusts_lexical([1.0] * enough) and not trusts_lexical([1.0] * (enough - 1))
    assert not trusts_lexical([0.2] * 1000) and trusts_lexical([MIN_AGREEMENT + 0.01] * 1000)
    assert trusts_lexical([1.0] * enough + [None] * 100)  # queries without a lexical match do not count



def test_base_gap_and_undecided_queries():
    from retriever.ranking.unfamiliar import DECISIVE_RANK, UNDECIDED_GAP, base_gap, undecided

    decided = {f"d{i}": 0.9 - 0.02 * i for i in range(20)}  # top 1 minus top 10: 0.18
    assert base_gap(decided) == pytest.approx(0.02 * (DECISIVE_RANK - 1)) and not undecided(base_gap(decided))
    tied = {f"d{i}": 0.5 - 0.001 * i for i in range(20)}
    assert undecided(base_gap(tied))
    assert base_gap({"a": 0.7, "b": 0.7 - UNDECIDED_GAP / 2}) == pytest.approx(UNDECIDED_GAP / 2)  # fewer than ten
    assert base_gap({}) is None and not undecided(None)  # the base found nothing: nothing to fuse into


def test_auto_resolves_per_call_trusting_agreement_or_an_undecided_base():
    from retriever.ranking.systems import AUTO, resolve

    decided = {f"q{i}": {"a": 2.0, "b": 1.0} for i in range(40)}  # the base prefers its first by far (gap 1.0)
    agree = {q: {"a": 5.0, "c": 1.0} for q in decided}
    disagree = {q: {"c": 5.0, "d": 1.0} for q in decided}
    choice = {**dict.fromkeys(decided, AUTO), "other": "bm25"}
    assert resolve(choice, decided, agree) == {**dict.fromkeys(decided, "hybrid:base"), "other": "bm25"}
    assert resolve(choice, decided, disagree) == {**dict.fromkeys(decided, "base"), "other": "bm25"}
    # BM25 not trusted: the queries whose base top ten are nearly tied are fused all the same, the decided are not
    tied = {**decided, "q0": {"a": 0.51, "b": 0.50}, "q1": {"a": 0.51, "b": 0.50}}
    chosen = resolve(choice, tied, disagree)
    assert chosen["q0"] == chosen["q1"] == "hybrid:base" and {chosen[f"q{i}"] for i in range(2, 40)} == {"base"}
    systems = FusionSettings("convex", {"hybrid:base": 0.5})
    assert run_system(AUTO, ["q1"], decided, agree, systems, 10) == run_system("base", ["q1"], decided, agree,
                                                                               systems, 10)
    many = list(decided)
    assert run_system(AUTO, many, decided, agree, systems, 10) == run_system("hybrid:base", many, decided, agree,
                                                                               systems, 10)
    mixed = run_system(AUTO, many, tied, disagree, systems, 10)
    assert list(mixed) == many and mixed["q0"] == run_system("hybrid:base", ["q0"], tied, disagree, systems, 10)["q0"]
    assert mixed["q5"] == run_system("base", ["q5"], tied, disagree, systems, 10)["q5"]
    assert (dense_part(AUTO), is_lexical(AUTO)) == ("base", True)


def test_auto_of_an_expert_decides_from_that_experts_ranking_and_trust_from_the_whole_call():
    """``auto:<expert>`` (a domain fitted without judgments) resolves as ``auto:base`` does, from its own dense
    ranking, into ``hybrid:<expert>`` or ``<expert>``; whether BM25 is trusted is decided once, over every query
    the call sends to any auto system (one corpus, one BM25), not per auto system."""
    from retriever.ranking.systems import AUTO, auto, resolve

    expert = {f"e{i}": {"a": 2.0, "b": 1.0} for i in range(40)}  # decided, as the base is below
    base = {f"u{i}": {"a": 2.0, "b": 1.0} for i in range(40)}
    agree = {q: {"a": 5.0, "c": 1.0} for q in {**expert, **base}}
    disagree = {q: {"c": 5.0, "d": 1.0} for q in {**expert, **base}}
    choice = {**dict.fromkeys(expert, auto("x")), **dict.fromkeys(base, AUTO)}
    assert resolve(choice, {**expert, **base}, agree) == {**dict.fromkeys(expert, "hybrid:x"),
                                                          **dict.fromkeys(base, "hybrid:base")}
    assert resolve(choice, {**expert, **base}, disagree) == {**dict.fromkeys(expert, "x"),
                                                             **dict.fromkeys(base, "base")}
    # half the call agrees (40 of 80 queries, prior 10: 40 / 90 = 0.44 >= 0.4): trusted for both systems, though
    # the 40 sent to auto:base disagree and would not trust it on their own
    half = {**{q: agree[q] for q in expert}, **{q: disagree[q] for q in base}}
    assert resolve(choice, {**expert, **base}, half) == {**dict.fromkeys(expert, "hybrid:x"),
                                                         **dict.fromkeys(base, "hybrid:base")}
    assert (dense_part(auto("x")), is_lexical(auto("x"))) == ("x", True)
    systems = FusionSettings("convex", {"hybrid:x": 0.5})
    ids = list(expert)
    assert run_system(auto("x"), ids, expert, agree, systems, 10) == run_system("hybrid:x", ids, expert, agree,
                                                                                systems, 10)


@pytest.mark.parametrize("gap", [None, "median"])
def test_unfamiliar_queries_are_reported_and_ranked_alike(lexical_world, monkeypatch, gap):
    """A query unlike every training domain goes to auto:base; the facade says so and names what answered, and
    evaluation decides the same (with the gate at the queries' median gap, where BM25 is not trusted, some are
    fused and some not: the toy encoder is otherwise undecided on every query)."""

    from eval.runs import SplitRun
    from retriever.router_retriever import RouterRetriever

    store = lexical_world["store"]
    rr = RouterRetriever.load(store.root, "pilot", model=str(store.base.id))
    rr.router = rr.router.recalibrated(min_similarity=1.01, default="auto:base")  # every query is unfamiliar
    dataset, index, lexical = (lexical_world[k]["toy"] for k in ("datasets", "indexes", "lexical"))
    split = dataset.split("test")
    if gap == "median":
        from retriever.ranking import search
        from retriever.ranking.unfamiliar import base_gap

        ids = list(split.queries)
        ranked = search(index, rr.encoder.encode([split.queries[q] for q in ids], "base"), ids, k=100)
        monkeypatch.setattr("retriever.ranking.unfamiliar.UNDECIDED_GAP", float(np.median(
            [base_gap(ranked[q]) for q in ids])))
        monkeypatch.setattr("retriever.ranking.unfamiliar.MIN_AGREEMENT", 1.1)  # BM25 never trusted
        monkeypatch.setattr("retriever.ranking.unfamiliar.MIN_LEXICAL_RATIO", float("inf"))
    hits = rr.search(split.queries, k=10, index=index, lexical=lexical)
    assert all(h.unfamiliar for h in hits) and {h.system for h in hits} <= {"base", "hybrid:base"}
    if gap == "median":
        assert {h.system for h in hits} == {"base", "hybrid:base"}
    routed = SplitRun(dataset, "test", rr.encoder, index, {"r": rr.router}, lexical=lexical,
                      fusion=rr.fusion).routed("r")
    assert routed.unfamiliar == set(split.queries)
    assert {h.query_id: h.system for h in hits} == routed.chosen
    for h in hits:
        assert dict(h.hits) == pytest.approx(dict(list(routed.results[h.query_id].items())[:10]))
    familiar = RouterRetriever.load(store.root, "pilot", model=str(store.base.id))
    familiar.router = familiar.router.recalibrated(min_similarity=0.0)
    assert not any(h.unfamiliar for h in familiar.search(split.queries, k=10, index=index, lexical=lexical))


@pytest.mark.parametrize("stored", [True, False])
def test_the_third_opinion_decides_trust_in_search_and_evaluation_alike(lexical_world, monkeypatch, tmp_path, stored):
    """Where agreement would not trust BM25 and no query is undecided, a third opinion that vouches (its threshold
    at 0) sends every unfamiliar query to hybrid:base, in search and in evaluation alike; an index kept without its
    documents' text has no third opinion, so they go to the base."""
    import shutil

    from eval.runs import SplitRun
    from retriever.index.faiss_index import CorpusIndex
    from retriever.router_retriever import RouterRetriever
    from retriever.storage.docstore import STORE_FILE

    store = lexical_world["store"]
    rr = RouterRetriever.load(store.root, "pilot", model=str(store.base.id))
    rr.router = rr.router.recalibrated(min_similarity=1.01, default="auto:base")  # every query is unfamiliar
    dataset, index, lexical = (lexical_world[k]["toy"] for k in ("datasets", "indexes", "lexical"))
    if not stored:  # as an index built before document stores
        path = shutil.copytree(index.path, tmp_path / "no-text")
        (path / STORE_FILE).unlink()
        meta = json.loads((path / "index.json").read_text())
        meta["files"] = {name: digest for name, digest in meta["files"].items() if name != STORE_FILE}
        (path / "index.json").write_text(json.dumps(meta))
        index = CorpusIndex.load(path)
        assert index.documents(index.doc_ids[:3]) == {}
    for name, value in (("MIN_AGREEMENT", 1.1), ("UNDECIDED_GAP", -1.0), ("MIN_LEXICAL_RATIO", 0.0)):
        monkeypatch.setattr(f"retriever.ranking.unfamiliar.{name}", value)
    queries = dataset.split("test").queries
    hits = rr.search(queries, k=10, index=index, lexical=lexical)
    assert {h.system for h in hits} == {"hybrid:base" if stored else "base"}
    routed = SplitRun(dataset, "test", rr.encoder, index, {"r": rr.router}, lexical=lexical,
                      fusion=rr.fusion).routed("r")
    assert routed.chosen == {h.query_id: h.system for h in hits}


@pytest.mark.parametrize("missing", ["agreement", "gap"])
def test_routing_data_from_before_auto_sends_unfamiliar_queries_to_the_base(lexical_world, tmp_path, missing):
    """A router directory whose cached routing scores predate the agreement (or, since the per-query gate, the
    gap) record still refits from its cache (as `experts remove` does): unfamiliar queries then go to the base."""
    import shutil

    from experts import cached_routing_data
    from retriever.routers import fit_router
    from retriever.routers.directory import RouterDirectory

    store = lexical_world["store"]
    root = shutil.copytree(store.root, tmp_path / "old-router")
    for path in root.glob("routing-data/*/scores-base.json"):
        record = json.loads(path.read_text())
        assert record.pop(missing) is not None
        path.write_text(json.dumps(record))
    old = RouterDirectory(root, store.base)
    info = old.load_router("pilot").info
    data = cached_routing_data(old, info["datasets"], info["lexical_keys"])
    assert data.auto_scores is None
    assert fit_router("pilot", data, novelty="auto").options["default"] == "base"
    assert cached_routing_data(store, info["datasets"], info["lexical_keys"]).auto_scores is not None


def test_auto_scores_mix_each_querys_system_from_the_cached_columns():
    """Calibration scores auto:base per query as search decides it: a dataset that trusts BM25 takes the hybrid's
    column for every query; one that does not takes it only where the base is undecided and BM25 matched."""
    from experts.unfamiliar_scores import auto_scores as _auto_scores

    systems = ["base", "hybrid:base"]
    records = {"trusting": {"base": {"ndcg@10": [0.1] * 30, "agreement": [1.0] * 30, "gap": [0.5] * 30}},
               "wary": {"base": {"ndcg@10": [0.1] * 3, "agreement": [0.0, 0.0, None], "gap": [0.01, 0.5, 0.01]}}}
    names = ["wary", "trusting", "wary", "wary"] + ["trusting"] * 29  # interleaved rows
    scores = np.array([[0.0, 1.0]] * len(names))
    auto = _auto_scores(records, names, scores, systems)
    assert auto[[1, *range(4, len(names))]].tolist() == [1.0] * 30  # trusted: the hybrid everywhere
    assert auto[[0, 2, 3]].tolist() == [1.0, 0.0, 0.0]  # undecided: hybrid; decided: base; no BM25 match: base
    doubled = _auto_scores(records, names + ["wary"] * 3, np.vstack([scores, scores[:3]]), systems)
    assert doubled[-3:].tolist() == [1.0, 0.0, 0.0]  # a dataset named twice has its rows twice


def test_auto_scores_consult_the_cached_third_opinion_as_search_does(caplog):
    """A dataset whose agreement does not trust BM25 is trusted in calibration when its cached third opinion
    reaches MIN_LEXICAL_RATIO (as ``resolve`` decides at search time), not when it falls short; a cache written
    before the third opinion, or by an older third ranker, is calibrated on agreement alone, with a warning."""
    from experts.unfamiliar_scores import auto_scores
    from retriever.ranking.third_opinion import THIRD_VERSION
    from retriever.ranking.unfamiliar import MIN_LEXICAL_RATIO, PRIOR_QUERIES

    n = 40
    base = {"ndcg@10": [0.1] * n, "agreement": [0.1] * n, "gap": [0.5] * n}  # 4 / 50: agreement alone distrusts
    with_base = [0.1 + 0.2 * (i % 3) for i in range(n)]  # the third ranker's agreement with the base, per query
    needed = MIN_LEXICAL_RATIO * (sum(with_base) + PRIOR_QUERIES) / n  # its mean agreement with BM25 to vouch
    scores, systems = np.array([[0.0, 1.0]] * n), ["base", "hybrid:base"]
    for shift, expected in ((1e-6, 1.0), (-1e-6, 0.0)):
        third = [[a, needed + shift] for a in with_base]
        auto = auto_scores({"d": {"base": {**base, "third": third, "third_version": THIRD_VERSION}}}, ["d"] * n,
                           scores, systems)
        assert auto.tolist() == [expected] * n
    assert auto_scores({"d": {"base": {**base, "third": None, "third_version": THIRD_VERSION}}}, ["d"] * n, scores,
                       systems).tolist() == [0.0] * n  # an index without text: agreement alone, no warning
    assert "third opinion" not in caplog.text
    vouching = [[a, needed + 1e-6] for a in with_base]
    for stale in ({}, {"third": vouching}, {"third": vouching, "third_version": THIRD_VERSION - 1}):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert auto_scores({"d": {"base": {**base, **stale}}}, ["d"] * n, scores, systems).tolist() == [0.0] * n
        assert "no current third opinion cached for 'd'" in caplog.text


def test_routing_scores_cache_the_third_opinion_and_refresh_caches_without_it(lexical_world):
    """The base's routing scores hold one third-opinion pair per query BM25 matched; scoring again rewrites a
    cache that lacks them and leaves the rest of it as it was."""
    from experts import score_experts

    store = lexical_world["store"]
    path = store.routing_data_path("toy") / "scores-base.json"
    record = json.loads(path.read_text())
    third = record["third"]
    assert len(third) == len(record["agreement"]) and any(p is not None for p in third)
    assert all((p is None) == (a is None) for p, a in zip(third, record["agreement"], strict=True))
    assert all(0 <= v <= 1 for p in third if p is not None for v in p)
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "third"}))
    info = store.load_router("pilot").info

    def score():
        score_experts(lexical_world["datasets"]["toy"], lexical_world["indexes"]["toy"], lexical_world["encoder"],
                      store, ["base"], info["max_queries"], info["seed"], lexical=lexical_world["lexical"]["toy"])

    score()
    assert json.loads(path.read_text()) == record
    path.write_text(json.dumps({**record, "third_version": record["third_version"] - 1}))  # an older third ranker
    score()
    assert json.loads(path.read_text()) == record
    os.utime(path, ns=(1, 1))
    score()  # complete: nothing is scored or written again
    assert path.stat().st_mtime_ns == 1
