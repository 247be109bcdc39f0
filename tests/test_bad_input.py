"""Bad input never deletes or corrupts data, never escapes its directory, and ends in one line, not a traceback.

One test per defect of the reliability issue (each checks every file that existed before is byte-identical
after), then property-based tests that feed random bytes and random JSON to every loader.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FAST, REPO, write_toy_dataset

import cli
from eval.data import DataError
from experts import TrainConfig, train_expert
from retriever.index.faiss_index import KIND as INDEX_KIND
from retriever.index.faiss_index import build_index
from retriever.routers.directory import RouterDirectory
from retriever.storage.artifacts import atomic_directory
from retriever.storage.files import ArtifactError


def sha256_tree(*roots: Path) -> dict[str, str]:
    """sha256 of every file below ``roots``: compared before and after a bad command."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(toy_encoder, toy_model_dir, tmp_path_factory):
    """The toy dataset, its index and a router directory with one expert and a built pilot router."""
    from eval.data import open_dataset
    from experts.routing import build_router, routing_data
    from retriever.encoding.expert_encoder import MultiExpertEncoder

    root = tmp_path_factory.mktemp("bad-input")
    write_toy_dataset(root / "beir")
    dataset = open_dataset(root / "beir", "toy")
    index = build_index(dataset, toy_encoder, root / "index")
    store = RouterDirectory(root / "router", toy_encoder.info, create=True)
    trained = train_expert([(dataset, index)], toy_encoder, TrainConfig(**{**FAST, "epochs": 1}))
    store.save_expert("toy", trained.write, trained.meta())
    encoder = store.load_into(MultiExpertEncoder(toy_encoder))
    build_router(store, "pilot", routing_data([(dataset, index)], encoder, store, max_queries=10),
                 {"datasets": ["toy"], "max_queries": 10, "seed": 0})
    encoder.remove("toy")
    return {"root": root, "data": root / "beir", "router": root / "router", "index": root / "index",
            "model": str(toy_model_dir)}


@pytest.fixture
def cli_run(world, tmp_path):
    """Run the CLI as a user would (no exception may escape: a traceback fails the test)."""

    def invoke(*args):
        return CliRunner().invoke(cli.main, ["-q", *map(str, args)], catch_exceptions=False)

    return invoke


def model_args(world, tmp_path):
    return ["--data-dir", world["data"], "--model", world["model"], "--cache-dir", tmp_path / "cache"]


def assert_one_line_error(result, *fragments):
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def copy_router(world, tmp_path) -> Path:
    return shutil.copytree(world["router"], tmp_path / "router")


# 1. Data loss: an absolute dataset name used to empty the user's own dataset folder.
def test_absolute_dataset_name_deletes_nothing(world, cli_run, tmp_path):
    mine = shutil.copytree(world["data"] / "toy", tmp_path / "mydata")
    router = copy_router(world, tmp_path)
    before = sha256_tree(mine, router)
    result = cli_run("build-router", *model_args(world, tmp_path), "--router", router, "--dataset", mine,
                     "--kind", "pilot")
    assert_one_line_error(result, f"invalid dataset name '{mine}'")
    result = cli_run("index", *model_args(world, tmp_path), "--dataset", mine)
    assert_one_line_error(result, "invalid dataset name")
    assert sha256_tree(mine, router) == before


# 2. --overwrite replaces only the artifact it writes, never a user's other folder.
def test_overwrite_refuses_a_folder_that_is_not_the_artifact(world, cli_run, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    before = sha256_tree(notes)
    result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", notes, "--overwrite")
    assert_one_line_error(result, "is not a routerretriever-corpus-index", "refusing to replace it")
    result = cli_run("experts", "export", "--router", world["router"], "--model", world["model"], "toy",
                     "--output", notes, "--overwrite")
    assert_one_line_error(result, "is not a routerretriever-expert-export", "refusing to replace it")
    assert sha256_tree(notes) == before
    # the artifact itself is replaced
    out = tmp_path / "idx"
    assert cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", out).exit_code == 0
    assert cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", out,
                   "--overwrite").exit_code == 0
    export = tmp_path / "export"
    for extra in ((), ("--overwrite",)):
        result = cli_run("experts", "export", "--router", world["router"], "--model", world["model"], "toy",
                         "--output", export, *extra)
        assert result.exit_code == 0, result.output
    assert json.loads((export / "routerretriever-export.json").read_text())["expert"] == "toy"


# 3. Dataset names are names: nothing is written outside --cache-dir or --run-dir.
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped", "a/b", ".."])
def test_dataset_names_cannot_escape(world, cli_run, tmp_path, monkeypatch, name):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for command in (["index"], ["evaluate", "--run-dir", tmp_path / "work" / "runs"]):
        result = cli_run(*command, *model_args(world, tmp_path), "--dataset", name)
        assert_one_line_error(result, f"invalid dataset name {name!r}")
    assert not (tmp_path / "cache").exists() and list((tmp_path / "work").iterdir()) == []
    assert not Path("/tmp/escaped").exists()


# 4. --query and --queries together: every query is searched.
def test_query_and_queries_file_are_both_searched(world, cli_run, tmp_path):
    plain = tmp_path / "queries.txt"
    plain.write_text("jazz music\n\nvolcano lava\n")
    result = cli_run("search", "--index", world["index"], "--model", world["model"], "--query", "blood sugar",
                     "--queries", plain, "--json", "-k", "2")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(h["query_id"], h["query"]) for h in lines] == [("q1", "blood sugar"), ("q2", "jazz music"),
                                                          ("q3", "volcano lava")]
    clash = tmp_path / "queries.jsonl"
    clash.write_text(json.dumps({"_id": "q1", "text": "tides"}) + "\n")
    result = cli_run("search", "--index", world["index"], "--model", world["model"], "--query", "x",
                     "--queries", clash)
    assert_one_line_error(result, "query id 'q1' in", "is also the id of a --query")


# 5. A cached index.json that is JSON but not an index is rebuilt; a damaged expert.json / router.json is one line.
@pytest.mark.parametrize("content", ["[]", '"x"', "{}", '{"kind": "routerretriever-corpus-index", '
                                     '"format_version": 1, "files": {}}'])
def test_damaged_cached_index_is_rebuilt(world, cli_run, tmp_path, content, caplog):
    args = ["evaluate", *model_args(world, tmp_path), "--dataset", "toy"]
    assert cli_run(*args).exit_code == 0
    (meta,) = (tmp_path / "cache" / "indexes").glob("*/index.json")
    meta.write_text(content)
    result = cli_run(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(meta.read_text())["count"] == 20  # rebuilt, and the next run reuses it
    assert any("rebuilding index" in r.message for r in caplog.records)


@pytest.mark.parametrize("file, content", [("experts/toy/expert.json", "[]"), ("router.json", '"x"'),
                                           ("experts/toy/expert.json", '{"kind": "routerretriever-expert", '
                                            '"format_version": 1, "files": {}, "base_model": 3}')])
def test_damaged_metadata_is_one_line(world, cli_run, tmp_path, file, content):
    router = copy_router(world, tmp_path)
    (router / file).write_text(content)
    before = sha256_tree(router)
    result = cli_run("evaluate", *model_args(world, tmp_path), "--dataset", "toy", "--router", router,
                     "--system", "expert:toy")
    assert_one_line_error(result, file.rsplit("/", 1)[-1])
    assert sha256_tree(router) == before


def test_damaged_routing_cache_is_recomputed(world, cli_run, tmp_path, caplog):
    router = copy_router(world, tmp_path)
    scores = router / "routing-data" / "toy" / "scores-toy.json"
    good = json.loads(scores.read_text())
    scores.write_text("{not json")
    result = cli_run("build-router", *model_args(world, tmp_path), "--router", router, "--dataset", "toy",
                     "--kind", "pilot")
    assert result.exit_code == 0, result.output
    again = json.loads(scores.read_text())
    assert (again["expert_key"], again["ndcg@10"]) == (good["expert_key"], good["ndcg@10"])
    assert any("recomputing" in r.message and "scores-toy.json" in r.message for r in caplog.records)


# 6. Tracebacks where one line is promised.
@pytest.mark.parametrize("config, message", [('{"max_steps": "10"}', "max_steps must be an integer, got '10'"),
                                             ('{"learning_rate": "fast"}', "learning_rate must be a finite number"),
                                             ('{"target_modules": 5}', "target_modules must be a non-empty list"),
                                             ('{"base_dropout": 1}', "base_dropout must be true or false")])
def test_train_config_with_wrong_types(world, cli_run, tmp_path, config, message):
    result = cli_run("train-expert", *model_args(world, tmp_path), "--dataset", "toy", "--router",
                     tmp_path / "r", "--name", "x", "--config", config)
    assert_one_line_error(result, message)
    assert not (tmp_path / "r").exists()


def _rewrite_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _update_checksum(directory: Path, name: str) -> None:
    digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    _rewrite_json(directory / "index.json", lambda meta: meta["files"].__setitem__(name, digest))


def test_damaged_index_metadata_and_faiss_file(world, cli_run, tmp_path, toy_encoder):
    from eval.data import open_dataset

    index = shutil.copytree(world["index"], tmp_path / "index")
    _rewrite_json(index / "index.json", lambda meta: meta.pop("count"))
    result = cli_run("search", "--index", index, "--model", world["model"], "--query", "jazz")
    assert_one_line_error(result, "index.json lacks the field 'count'")
    hnsw = tmp_path / "hnsw"
    from retriever.index.base import IndexConfig

    build_index(open_dataset(world["data"], "toy"), toy_encoder, hnsw, IndexConfig(index_type="hnsw"))
    data = bytearray((hnsw / "index.faiss").read_bytes())
    (hnsw / "index.faiss").write_bytes(bytes(data[: len(data) // 3]))
    _update_checksum(hnsw, "index.faiss")
    before = sha256_tree(hnsw)
    result = cli_run("search", "--index", hnsw, "--model", world["model"], "--query", "jazz")
    assert_one_line_error(result, "index.faiss is not a readable FAISS index")
    assert sha256_tree(hnsw) == before


@pytest.mark.parametrize("r", [0, -1, "8", None])
def test_adapter_config_with_bad_rank(world, cli_run, tmp_path, r):
    router = copy_router(world, tmp_path)
    expert = router / "experts" / "toy"
    _rewrite_json(expert / "adapter_config.json", lambda config: config.__setitem__("r", r))
    digest = hashlib.sha256((expert / "adapter_config.json").read_bytes()).hexdigest()
    _rewrite_json(expert / "expert.json", lambda meta: meta["files"].__setitem__("adapter_config.json", digest))
    result = cli_run("evaluate", *model_args(world, tmp_path), "--dataset", "toy", "--router", router,
                     "--system", "expert:toy")
    assert_one_line_error(result, "adapter config 'r' must be a positive integer", repr(r))


# 7. A truncated gzip corpus; 8. bytes that are not UTF-8 — the error names the file (and line).
def test_truncated_gzip_corpus(world, cli_run, tmp_path):
    data = shutil.copytree(world["data"], tmp_path / "beir")
    corpus = data / "toy" / "corpus.jsonl.gz"
    corpus.write_bytes(corpus.read_bytes()[:-20])
    result = cli_run("index", "--data-dir", data, "--model", world["model"], "--cache-dir", tmp_path / "cache",
                     "--dataset", "toy")
    assert_one_line_error(result, "corpus.jsonl.gz: truncated or corrupt gzip file")
    assert "Aborted" not in result.output


@pytest.mark.parametrize("file", ["corpus.jsonl.gz", "queries.jsonl", "qrels/test.tsv"])
def test_non_utf8_input_names_file_and_line(world, cli_run, tmp_path, file):
    data = shutil.copytree(world["data"], tmp_path / "beir")
    path = data / "toy" / file
    raw = gzip.decompress(path.read_bytes()) if file.endswith(".gz") else path.read_bytes()
    lines = raw.split(b"\n")
    lines[2] = lines[2][:5] + b"\xff\xfe" + lines[2][5:]
    raw = b"\n".join(lines)
    path.write_bytes(gzip.compress(raw) if file.endswith(".gz") else raw)
    result = cli_run("evaluate", "--data-dir", data, "--model", world["model"], "--cache-dir", tmp_path / "cache",
                     "--dataset", "toy")
    assert_one_line_error(result, f"{file.rsplit('/', 1)[-1]}:3: not UTF-8 text")


def test_non_utf8_query_file(world, cli_run, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_bytes(b"jazz\nbad \xff byte\n")
    result = cli_run("search", "--index", world["index"], "--model", world["model"], "--queries", queries)
    assert_one_line_error(result, "q.txt:2: not UTF-8 text")


# 9. A killed writer's temporary directory is removed by the next write; 11. --output is created exclusively.
WRITER = """
import sys, time
from retriever.storage.artifacts import atomic_directory
with atomic_directory(sys.argv[1], ("index.json", "routerretriever-corpus-index"), overwrite=sys.argv[2] == "1") as t:
    (t / "embeddings.npy").write_bytes(b"partial")
    print("writing", flush=True)
    time.sleep(120)
"""


def _killed_writer(target: Path, overwrite: bool, sig=signal.SIGKILL):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), "1" if overwrite else "0"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "writing"
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_build_leaves_nothing_behind_after_the_next_write(world, toy_encoder, tmp_path, sig):
    from eval.data import open_dataset

    target = tmp_path / "out" / "idx"
    proc = _killed_writer(target, overwrite=True)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert [p.name.startswith(".idx.tmp-") for p in target.parent.iterdir()] == [True]  # the partial write
    build_index(open_dataset(world["data"], "toy"), toy_encoder, target)
    assert os.listdir(target.parent) == ["idx"]


def test_concurrent_output_is_exclusive(world, cli_run, tmp_path):
    target = tmp_path / "idx"
    proc = _killed_writer(target, overwrite=False)  # a first `index --output idx`, still running
    try:
        result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", target)
        assert_one_line_error(result, f"{target} already exists (being written by process {proc.pid})")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", target)
    assert result.exit_code == 0, result.output  # the dead writer's reservation is taken over
    assert sorted(os.listdir(tmp_path)) == ["idx", "idx-bm25"]  # its temporary directory removed
    second = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", target)
    assert_one_line_error(second, "already exists; pass --overwrite")


def test_exclusive_directory_is_not_left_behind_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "x", ("index.json", INDEX_KIND), overwrite=False):
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


# 10. Expert and router names cannot reach outside the router directory.
@pytest.mark.parametrize("system", ["expert:../../elsewhere/experts/x", "expert:/abs/path", "expert:a/b"])
def test_expert_names_cannot_escape(world, cli_run, tmp_path, system):
    result = cli_run("evaluate", *model_args(world, tmp_path), "--dataset", "toy", "--router", world["router"],
                     "--system", system)
    assert_one_line_error(result, "invalid expert name")


def test_router_names_cannot_escape(world, cli_run, tmp_path):
    result = cli_run("search", "--index", world["index"], "--router", world["router"], "--model", world["model"],
                     "--routing", "../../x", "--query", "jazz")
    assert_one_line_error(result, "invalid router name '../../x'")


# 12. The minor ones.
def test_remove_with_a_path_is_refused_by_name(world, cli_run, tmp_path):
    router = copy_router(world, tmp_path)
    before = sha256_tree(tmp_path)
    result = cli_run("experts", "remove", "--router", router, "--model", world["model"], "../x")
    assert_one_line_error(result, "invalid expert name '../x'")
    assert sha256_tree(tmp_path) == before


def test_list_flags_an_expert_of_another_base_model(world, cli_run, tmp_path):
    router = copy_router(world, tmp_path)
    _rewrite_json(router / "experts" / "toy" / "expert.json",
                  lambda meta: meta["base_model"].__setitem__("fingerprint", "0" * 64))
    result = cli_run("experts", "list", "--router", router, "--model", world["model"])
    assert result.exit_code == 0, result.output
    assert "BASE MODEL MISMATCH" in result.output and "fingerprint 000000000000" in result.output


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_refused(world, cli_run, query):
    result = cli_run("search", "--index", world["index"], "--model", world["model"], "--query", query)
    assert_one_line_error(result, "empty query 'q1'")


def test_every_system_given_is_evaluated(world, cli_run, tmp_path):
    out = tmp_path / "r.json"
    result = cli_run("evaluate", *model_args(world, tmp_path), "--dataset", "toy", "--router", world["router"],
                     "--system", "base", "--system", "expert:toy", "--system", "pilot", "--output-json", out,
                     "--run-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert [r["system"] for r in json.loads(out.read_text())["results"]] == ["base", "expert:toy", "pilot"]
    assert sorted(os.listdir(tmp_path / "runs")) == ["toy.test.base.trec", "toy.test.expert-toy.trec",
                                                     "toy.test.pilot.trec"]


# Property-based: random bytes and random JSON reach every loader; only the library's own errors come out.
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),  # NaN, inf too
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3), max_leaves=8)
LINES = st.lists(st.one_of(JSON.map(json.dumps), st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
                           st.just('{"_id": "d1", "text": "t"}')), max_size=6)


@FUZZ
@given(raw=st.binary(max_size=300) | LINES.map(lambda lines: "\n".join(lines).encode("utf-8")),
       gz=st.booleans())
def test_fuzz_dataset_loaders(tmp_path_factory, raw, gz):
    from eval.data import iter_corpus, load_qrels, load_queries

    folder = tmp_path_factory.mktemp("fuzz")
    for loader, name in ((lambda p: list(iter_corpus(p)), "corpus.jsonl"), (load_queries, "queries.jsonl"),
                         (load_qrels, "test.tsv")):
        path = folder / (name + (".gz" if gz and name == "corpus.jsonl" else ""))
        path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
        try:
            loader(path)
        except DataError:
            pass


ARTIFACT_FILES = ["index/index.json", "index/doc_ids.json", "index/embeddings.npy", "router/router.json",
                  "router/experts/toy/expert.json", "router/experts/toy/adapter_config.json",
                  "router/experts/toy/adapter_model.safetensors", "router/routers/pilot/routing.json"]
METADATA_FILES = [f for f in ARTIFACT_FILES if f.endswith(".json")]


def _load_everything(root: Path, toy_encoder):
    from retriever.index.faiss_index import CorpusIndex
    from retriever.routers import load_router

    for load in (lambda: CorpusIndex.load(root / "index", toy_encoder.info, verify=False),
                 lambda: RouterDirectory(root / "router", toy_encoder.info).load_factors("toy"),
                 lambda: load_router(root / "router" / "routers" / "pilot")):
        try:
            load()
        except ArtifactError:
            pass


@pytest.fixture(scope="module")
def fuzz_copy(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-artifacts")
    shutil.copytree(world["index"], root / "index")
    shutil.copytree(world["router"], root / "router")
    return root


@FUZZ
@given(file=st.sampled_from(METADATA_FILES), pick=st.integers(0, 30), value=JSON, whole=st.booleans())
def test_fuzz_artifact_metadata(fuzz_copy, toy_encoder, file, pick, value, whole):
    """Replace a metadata file by random JSON, or one of its fields by a random value."""
    path = fuzz_copy / file
    original = path.read_bytes()
    data = json.loads(original)
    if whole or not isinstance(data, dict):
        data = value
    else:
        keys = sorted(data)
        data[keys[pick % len(keys)]] = value
    path.write_text(json.dumps(data))
    try:
        _load_everything(fuzz_copy, toy_encoder)
    finally:
        path.write_bytes(original)


@FUZZ
@given(file=st.sampled_from(ARTIFACT_FILES), raw=st.binary(max_size=200))
def test_fuzz_artifact_bytes(fuzz_copy, toy_encoder, file, raw):
    path = fuzz_copy / file
    original = path.read_bytes()
    path.write_bytes(raw)
    try:
        _load_everything(fuzz_copy, toy_encoder)
    finally:
        path.write_bytes(original)


# What a second review found: leftovers of killed writers and hand-damaged metadata.
def test_hidden_leftovers_are_not_experts_or_routers(world, cli_run, tmp_path):
    router = copy_router(world, tmp_path)
    shutil.copytree(router / "experts" / "toy", router / "experts" / ".toy.tmp-999999-x")  # a killed save
    shutil.copytree(router / "routers" / "pilot", router / "routers" / ".pilot.old-999999-x")
    store = RouterDirectory(router, world_encoder_info(world))
    assert store.expert_names() == ["toy"] and store.built_routers() == ["pilot"]
    result = cli_run("experts", "list", "--router", router, "--model", world["model"])
    assert result.exit_code == 0 and result.output.startswith("toy\t"), result.output


def world_encoder_info(world):
    from retriever.encoding.encoder import load_encoder

    return load_encoder(world["model"]).info


def test_kill_between_the_two_renames_loses_nothing(world, toy_encoder, tmp_path):
    from eval.data import open_dataset

    target = shutil.copytree(world["index"], tmp_path / "idx")
    old = tmp_path / ".idx.old-999999-abc"  # what a writer killed between its two renames leaves: no target
    old.mkdir()
    target.rename(old / "artifact")
    build_index(open_dataset(world["data"], "toy"), toy_encoder, target)  # the next write puts it back first,
    assert not old.exists() and (target / "index.json").is_file()  # then replaces it as asked


def test_overwrite_takes_over_a_dead_writers_reservation(world, cli_run, tmp_path):
    target = tmp_path / "idx"
    target.mkdir()
    (target / ".incomplete").write_text("999999")  # an exclusive `index --output` killed before it finished
    result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", target, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (target / "index.json").is_file() and not (target / ".incomplete").exists()


def test_expert_metadata_must_list_its_files(world, cli_run, tmp_path):
    router = copy_router(world, tmp_path)
    _rewrite_json(router / "experts" / "toy" / "expert.json", lambda meta: meta["files"].clear())
    result = cli_run("evaluate", *model_args(world, tmp_path), "--dataset", "toy", "--router", router,
                     "--system", "expert:toy")
    assert_one_line_error(result, "expert.json: 'files' must list the checksums of adapter_model.safetensors")


@pytest.mark.parametrize("change", [lambda meta: meta.__setitem__("options", {}),
                                    lambda meta: meta["options"].__setitem__("min_confidence", "x"),
                                    lambda meta: meta["options"].__setitem__("aggregate", "median")])
def test_damaged_router_options_fail_at_load(world, cli_run, tmp_path, change):
    router = copy_router(world, tmp_path)
    _rewrite_json(router / "routers" / "pilot" / "routing.json", change)
    result = cli_run("search", "--index", world["index"], "--router", router, "--model", world["model"],
                     "--routing", "pilot", "--query", "jazz")
    assert_one_line_error(result, "routers/pilot is damaged")


# The second pass (issue 23). 1. Data loss: a router directory is created only where nothing is, and --overwrite
# replaces only a directory that holds the artifact and nothing else.
def test_router_is_never_created_inside_another_directory(world, cli_run, tmp_path):
    index = shutil.copytree(world["index"], tmp_path / "idx")
    before = sha256_tree(index)
    result = cli_run("train-expert", *model_args(world, tmp_path), "--dataset", "toy", "--router", index,
                     "--name", "x")
    assert_one_line_error(result, f"{index} is not a router directory (no router.json) and is not empty")
    assert sha256_tree(index) == before
    # what the old bug left (a router inside an index directory) is not deleted by the index's --overwrite
    shutil.copytree(world["router"], index, dirs_exist_ok=True)
    before = sha256_tree(index)
    result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", index, "--overwrite")
    assert_one_line_error(result, "is not a routerretriever-corpus-index holding nothing else", "refusing")
    assert sha256_tree(index) == before


def test_index_output_is_never_the_current_directory(world, cli_run, tmp_path, monkeypatch):
    index = shutil.copytree(world["index"], tmp_path / "idx")
    before = sha256_tree(tmp_path)
    monkeypatch.chdir(index)
    for output in (".", ".."):
        result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", output,
                         "--overwrite")
        assert_one_line_error(result, "is the current directory or contains it; refusing to replace it")
    assert sha256_tree(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["idx"]


def test_output_directory_link_is_written_through(world, cli_run, tmp_path):
    real = shutil.copytree(world["index"], tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--output", link, "--overwrite",
                     "--no-lexical")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == real and (real / "index.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]  # nothing left beside them


# 2. Half-done commands: everything a command needs is checked before its first write, and a change that can
# still fail later (an expert added or removed, then the routers refitted) is one transaction.
@pytest.mark.parametrize("damage", ["missing", "damaged"])
def test_remove_keeps_the_expert_when_the_routers_cannot_be_refitted(world, cli_run, tmp_path, damage):
    router = copy_router(world, tmp_path)
    cache = router / "routing-data"
    if damage == "missing":
        shutil.rmtree(cache)
    else:
        (cache / "toy" / "scores-base.json").write_text("{not json")
    before = sha256_tree(router)
    result = cli_run("experts", "remove", "--router", router, "--model", world["model"], "toy")
    assert_one_line_error(result, "expert 'toy' was not removed", "no current scores of 'base' on 'toy'",
                          "run build-router")
    assert sha256_tree(router) == before
    assert RouterDirectory(router, world_encoder_info(world)).expert_names() == ["toy"]


def test_remove_refits_the_routers_without_the_expert(world, cli_run, tmp_path):
    from retriever.routers import load_router

    router = copy_router(world, tmp_path)
    result = cli_run("experts", "remove", "--router", router, "--model", world["model"], "toy")
    assert result.exit_code == 0 and "removed toy; refitted routers: pilot" in result.output, result.output
    assert load_router(router / "routers" / "pilot").systems == ["base"]
    assert sorted(os.listdir(router / "experts")) == []


def test_train_expert_needs_the_routers_datasets_before_training(world, cli_run, tmp_path):
    router = copy_router(world, tmp_path)
    write_toy_dataset(tmp_path / "d2", "other")
    before = sha256_tree(router)
    result = cli_run("train-expert", "--data-dir", tmp_path / "d2", "--model", world["model"], "--cache-dir",
                     tmp_path / "cache", "--dataset", "other", "--router", router, "--name", "other")
    assert_one_line_error(result, "were built on dataset 'toy', which adding an expert refits them on",
                          "dataset 'toy' not found")
    assert sha256_tree(router) == before and not (tmp_path / "cache").exists()  # nothing indexed or trained


def test_train_expert_is_rolled_back_when_the_refit_fails(world, cli_run, tmp_path):
    router = copy_router(world, tmp_path)
    _rewrite_json(router / "routers" / "pilot" / "routing.json",
                  lambda meta: meta["info"].__setitem__("datasets", ["toy", "broken"]))
    data = shutil.copytree(world["data"], tmp_path / "beir")
    shutil.copytree(data / "toy", data / "broken")
    corpus = data / "broken" / "corpus.jsonl.gz"
    corpus.write_bytes(corpus.read_bytes()[:-20])  # its qrels read fine: the corpus fails only in the refit
    before = sha256_tree(router)
    result = cli_run("train-expert", "--data-dir", data, "--model", world["model"], "--cache-dir", tmp_path / "cache",
                     "--dataset", "toy", "--router", router, "--name", "toy", "--overwrite",
                     "--config", '{"max_steps": 2}')
    assert_one_line_error(result, "broken/corpus.jsonl.gz: truncated or corrupt gzip file")
    assert sha256_tree(router) == before  # the old expert is back, byte for byte
    assert sorted(os.listdir(router / "experts")) == ["toy"]


def test_outputs_are_checked_before_any_work(world, cli_run, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    evaluate = ["evaluate", *model_args(world, tmp_path), "--dataset", "toy"]
    benchmark = ["benchmark", *model_args(world, tmp_path), "--router", tmp_path / "r", "--expert-dataset", "toy"]
    for args, option, message in (
            ([*evaluate, "--output-json", a_file / "out.json"], "--output-json", f"{a_file} is not a directory"),
            ([*evaluate, "--run-dir", a_file / "runs"], "--run-dir", f"{a_file} is not a directory"),
            ([*evaluate, "--output-json", tmp_path], "--output-json", "is a directory"),
            ([*benchmark, "--output-json", tmp_path / "b.json", "--plot", tmp_path / "x.xyz"], "--plot",
             "'.xyz' is not an image type matplotlib writes ("),
            ([*benchmark, "--output-json", tmp_path / "b.json", "--markdown", a_file / "b.md"], "--markdown",
             f"{a_file} is not a directory")):
        result = cli_run(*args)
        assert_one_line_error(result, f"Invalid value for '{option}'", message)
        assert result.exit_code == 2
    assert sorted(os.listdir(tmp_path)) == ["a-file"] and a_file.read_text() == "mine"


def test_output_json_follows_links_and_dash_is_standard_output(world, cli_run, tmp_path, monkeypatch):
    import threading

    monkeypatch.chdir(tmp_path)
    evaluate = ["evaluate", *model_args(world, tmp_path), "--dataset", "toy"]
    result = cli_run(*evaluate, "--output-json", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["system"] == "base" and not (tmp_path / "-").exists()
    assert "nDCG@10" in result.stderr  # the table, out of the JSON's way
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("{}")
    link.symlink_to(real)
    assert cli_run(*evaluate, "--output-json", link).exit_code == 0
    assert link.is_symlink() and json.loads(real.read_text())["results"][0]["dataset"] == "toy"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    result = cli_run(*evaluate, "--output-json", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert json.loads(received[0])["results"][0]["dataset"] == "toy" and fifo.is_fifo()  # written through


# 3. Non-finite numbers: every numeric option and config field, every loader.
@pytest.mark.parametrize("args, message", [
    (["--anchor-weight", "inf", "--anchor-dataset", "other"], "anchor_weight must be a finite number, got inf"),
    (["--anchor-weight", "nan", "--anchor-dataset", "other"], "anchor_weight must be a finite number, got nan"),
    (["--learning-rate", "nan"], "learning_rate must be a finite number, got nan"),
    (["--temperature", "-inf"], "temperature must be a finite number, got -inf"),
    (["--config", '{"anchor_weight": NaN}'], "not valid JSON (NaN is not a finite number)"),
    (["--config", '{"lora_dropout": 1e999}'], "not valid JSON (1e999 is not a finite number)"),
    (["--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["--seed", str(2**64)], "seed must be an integer in [0, 4294967295]"),
])
def test_non_finite_and_out_of_range_training_options(world, cli_run, tmp_path, args, message):
    data = shutil.copytree(world["data"], tmp_path / "beir")
    write_toy_dataset(data, "other")
    result = cli_run("train-expert", "--data-dir", data, "--model", world["model"], "--cache-dir", tmp_path / "cache",
                     "--dataset", "toy", "--router", tmp_path / "r", "--name", "x", *args)
    assert_one_line_error(result, message)
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()  # refused before any work


def test_one_training_query_is_refused_before_training(world, cli_run, tmp_path):
    data = shutil.copytree(world["data"], tmp_path / "beir")
    (data / "toy" / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq-solar\tsolar-1\t1\n")
    result = cli_run("train-expert", "--data-dir", data, "--model", world["model"], "--cache-dir", tmp_path / "cache",
                     "--dataset", "toy", "--router", tmp_path / "r", "--name", "x")
    assert_one_line_error(result, "toy/train: 1 training query with a positive judgment: an expert needs at least 2")
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()


def test_non_finite_embeddings_are_named_in_one_line(world, cli_run, tmp_path):
    import numpy as np

    index = shutil.copytree(world["index"], tmp_path / "index")
    vectors = np.load(index / "embeddings.npy")
    vectors[3, 5] = np.nan
    np.save(index / "embeddings.npy", vectors)
    _update_checksum(index, "embeddings.npy")
    result = cli_run("search", "--index", index, "--model", world["model"], "--query", "jazz")
    assert_one_line_error(result, "embeddings.npy holds a non-finite value (nan) at index (3, 5)")


def test_a_diverging_loss_saves_nothing(data_dir, toy_encoder, tmp_path):
    from eval.data import open_dataset

    toy = open_dataset(data_dir, "toy")
    index = build_index(toy, toy_encoder, tmp_path / "index")
    with pytest.raises(ValueError, match="training toy diverged at step 1: the loss is nan"):
        train_expert([(toy, index)], toy_encoder, TrainConfig(**{**FAST, "temperature": 1e-300}))


NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])


def _load_index(root, encoder):
    from retriever.index.faiss_index import CorpusIndex

    return CorpusIndex.load(root / "index", encoder.info)


def _load_pilot(root, encoder):
    from retriever.routers import load_router

    return load_router(root / "router" / "routers" / "pilot")


def _load_expert(root, encoder):
    return RouterDirectory(root / "router", encoder.info).load_factors("toy")


# array file -> (the metadata listing its checksum, what loads it)
ARRAYS = {"index/embeddings.npy": ("index/index.json", _load_index),
          "router/routers/pilot/pilots.npy": ("router/routers/pilot/routing.json", _load_pilot),
          "router/routers/pilot/pilot_sizes.npy": ("router/routers/pilot/routing.json", _load_pilot),
          "router/experts/toy/adapter_model.safetensors": ("router/experts/toy/expert.json", _load_expert)}


@FUZZ
@given(file=st.sampled_from(sorted(ARRAYS)), at=st.integers(0, 10**6), value=NON_FINITE)
def test_fuzz_non_finite_arrays_are_refused_naming_the_file(fuzz_copy, toy_encoder, file, at, value):
    """A NaN or infinity anywhere in a saved array (its checksum updated, so only the finite check can catch it)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    path, (meta_file, load) = fuzz_copy / file, ARRAYS[file]
    originals = {p: p.read_bytes() for p in (path, fuzz_copy / meta_file)}
    arrays = load_file(path) if path.suffix == ".safetensors" else {"": np.load(path)}
    key = sorted(arrays)[at % len(arrays)]
    arrays[key].reshape(-1)[at % arrays[key].size] = value
    if path.suffix == ".safetensors":
        save_file(arrays, path)
    else:
        np.save(path, arrays[""])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _rewrite_json(fuzz_copy / meta_file, lambda meta: meta["files"].__setitem__(path.name, digest))
    try:
        with pytest.raises(ArtifactError, match=rf"{re.escape(path.name)}.* holds a non-finite value"):
            load(fuzz_copy, toy_encoder)
    finally:
        for original, content in originals.items():
            original.write_bytes(content)


JSON_LOADERS = {"index/index.json": _load_index, "router/routers/pilot/routing.json": _load_pilot,
                "router/experts/toy/expert.json": _load_expert,
                "router/router.json": lambda root, encoder: RouterDirectory(root / "router", encoder.info)}


@FUZZ
@given(file=st.sampled_from(sorted(JSON_LOADERS)), pick=st.integers(0, 30), value=NON_FINITE, nested=st.booleans())
def test_fuzz_non_finite_json_numbers_are_refused_naming_the_file(fuzz_copy, toy_encoder, file, pick, value,
                                                                  nested):
    path = fuzz_copy / file
    original = path.read_bytes()
    data = json.loads(original)
    keys = sorted(data)
    data[keys[pick % len(keys)]] = {"x": [1, value]} if nested else value
    path.write_text(json.dumps(data))  # Python writes NaN, Infinity: not JSON
    try:
        with pytest.raises(ArtifactError, match=rf"{re.escape(path.name)} is not valid JSON: .*is not a finite"):
            JSON_LOADERS[file](fuzz_copy, toy_encoder)
    finally:
        path.write_bytes(original)


@FUZZ
@given(name=st.sampled_from(["corpus.jsonl", "queries.jsonl"]), line=st.integers(0, 4),
       token=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-2.5e400"]))
def test_fuzz_non_finite_numbers_in_data_files_name_file_and_line(tmp_path_factory, name, line, token):
    from eval.data import iter_corpus, load_queries

    path = tmp_path_factory.mktemp("jsonl") / name
    records = [json.dumps({"_id": f"d{i}", "text": "t"}) for i in range(5)]
    records[line] = records[line][:-1] + f', "score": {token}}}'
    path.write_text("\n".join(records) + "\n")
    with pytest.raises(DataError, match=rf"{name}:{line + 1}: {re.escape(token)} is not a finite number"):
        list(iter_corpus(path)) if name == "corpus.jsonl" else load_queries(path)


@FUZZ
@given(score=st.integers(-(2**70), 2**70) | st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32 + 1])
       | st.sampled_from(["1.5", "1e3", "nan", "1_0", "\u0663", "", "+3", "-0"]))
def test_fuzz_qrels_scores_are_range_checked(tmp_path_factory, score):
    from eval.data import SCORE_RANGE, load_qrels

    path = tmp_path_factory.mktemp("qrels") / "test.tsv"
    path.write_text(f"query-id\tcorpus-id\tscore\nq\td\t{score}\n", encoding="utf-8")
    valid = re.fullmatch(r"[+-]?[0-9]+", str(score)) and SCORE_RANGE[0] <= int(score) <= SCORE_RANGE[1]
    if valid:
        assert load_qrels(path) == {"q": {"d": int(score)}}
    else:
        with pytest.raises(DataError, match=r"test.tsv:2: score must be an integer in \[-2147483648, 2147483647\]"):
            load_qrels(path)


# 4. A hang: a Ray address where nothing listens (run as a user would, in its own process; the timeout only
# turns a regression into a failure instead of a stuck suite). 6. Ray's other problems: one line.
def test_unreachable_ray_address_fails_at_once(world, tmp_path):
    args = [*map(str, model_args(world, tmp_path)), "--dataset", "toy", "--encoder", "ray", "--ray-address",
            "127.0.0.1:1"]
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "-q", "index", *args],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == ["Error: cannot reach the Ray cluster at 127.0.0.1:1: Connection "
                                                  "refused"]


@pytest.mark.parametrize("args, message", [
    (["--ray-address", "127.0.0.1"], "invalid Ray address '127.0.0.1': use auto, local, host:port"),
    (["--ray-address", "ray://127.0.0.1:99999"], "invalid Ray address"),
    (["--gpus-per-worker", "nan"], "gpus must be a finite number >= 0, got nan"),
])
def test_bad_ray_settings_are_one_line(world, cli_run, tmp_path, args, message):
    result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--encoder", "ray", *args)
    assert_one_line_error(result, message)


def test_ray_with_a_missing_model_is_one_line(world, cli_run, tmp_path):
    result = cli_run("index", "--data-dir", world["data"], "--cache-dir", tmp_path / "cache", "--dataset", "toy",
                     "--encoder", "ray", "--model", tmp_path / "absent")
    assert_one_line_error(result, f"model '{tmp_path / 'absent'}' is not a local sentence-transformers directory")
    assert not (tmp_path / "cache").exists()


def _damage_model(model: Path, damage: str) -> None:
    if damage == "truncated":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "nan":
        from safetensors.torch import load_file, save_file

        state = load_file(model / "model.safetensors")
        key = sorted(state)[0]
        state[key].view(-1)[7] = float("nan")
        save_file(state, model / "model.safetensors", metadata={"format": "pt"})
    elif damage == "config":
        (model / "config.json").write_text("{not json")
    else:
        (model / "modules.json").write_text('[{"idx": 0 "name": "0"}]' if damage == "modules" else "{}")


# 6. A damaged --model and an unusable --device; 7. a malformed modules.json names its file.
@pytest.mark.parametrize("damage, message", [
    ("truncated", "model.safetensors is not a readable safetensors file: Error while deserializing header"),
    ("nan", "model.safetensors (tensor embeddings.LayerNorm.bias) holds a non-finite value (nan) at index 7"),
    ("config", "cannot load the model in"),
    ("modules", "modules.json is not valid JSON: Expecting ',' delimiter"),
    ("modules-object", "modules.json must be a JSON list of the model's modules"),
])
def test_damaged_model_is_one_line(world, cli_run, tmp_path, damage, message):
    model = shutil.copytree(world["model"], tmp_path / "model")
    _damage_model(model, damage)
    result = cli_run("index", "--data-dir", world["data"], "--cache-dir", tmp_path / "cache", "--dataset", "toy",
                     "--model", model)
    assert_one_line_error(result, message)
    assert not (tmp_path / "cache").exists()


def test_meta_device_is_one_line(world, cli_run):
    result = cli_run("search", "--index", world["index"], "--model", world["model"], "--query", "jazz",
                     "--device", "meta")
    assert_one_line_error(result, "cannot use device 'meta': it holds no data to compute with")


# 6. Milvus URIs: each problem one line, a user's file or folder never written into.
@pytest.mark.parametrize("uri, message", [
    ("foo://bar", "unsupported Milvus URI scheme 'foo' in 'foo://bar'"),
    ("http://", "Milvus URI 'http://' names no server"),
    ("http://localhost:99999", "invalid Milvus URI 'http://localhost:99999': Port out of range"),
    ("mine.db", "mine.db is not a Milvus Lite database"),
    ("folder.db", "folder.db is not a Milvus Lite database"),
])
def test_bogus_milvus_uris_are_refused_before_any_work(world, cli_run, tmp_path, monkeypatch, uri, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.db").write_text("not milvus")
    (tmp_path / "folder.db").mkdir()
    (tmp_path / "folder.db" / "notes.txt").write_text("mine")
    before = sha256_tree(tmp_path)
    result = cli_run("index", *model_args(world, tmp_path), "--dataset", "toy", "--backend", "milvus", "--uri", uri)
    assert_one_line_error(result, message)
    assert sha256_tree(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["folder.db", "mine.db"]


def test_unreachable_milvus_server_is_one_line(world, cli_run):
    result = cli_run("search", "--backend", "milvus", "--uri", "http://127.0.0.1:1", "--index", "c", "--model",
                     world["model"], "--query", "jazz")
    assert_one_line_error(result, "cannot open Milvus at http://127.0.0.1:1: Fail connecting to server on "
                                  "127.0.0.1:1")


def test_milvus_lite_file_held_by_another_process_is_one_line(world, cli_run, tmp_path):
    pytest.importorskip("milvus_lite")
    db = tmp_path / "m.db"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pymilvus import MilvusClient\n"
                               "MilvusClient(sys.argv[1]).list_collections()\nprint('open', flush=True)\n"
                               "time.sleep(120)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        result = cli_run("search", "--backend", "milvus", "--uri", db, "--index", "c", "--model", world["model"],
                         "--query", "jazz")
        assert_one_line_error(result, f"cannot open Milvus at {db}: another process holds the lock on")
    finally:
        holder.kill()
        holder.wait(timeout=30)


# 5. Silent wrong results: a bare string is refused, a repeated dataset counts once.
def test_search_refuses_a_bare_string_and_checks_its_arguments_first(world, tmp_path):
    from retriever.router_retriever import RouterRetriever

    retriever = RouterRetriever.base_only(world["model"])
    with pytest.raises(TypeError, match=r"got the string 'jazz'; for one query pass \['jazz'\]"):
        retriever.search("jazz", k=3, index=world["index"])
    for k in (0, 2.5, True):  # checked before the (missing) index is opened
        with pytest.raises(ValueError, match=f"k must be a positive integer, got {k!r}"):
            retriever.search(["jazz"], k=k, index=tmp_path / "absent")
    assert [len(hit.hits) for hit in retriever.search(["jazz"], k=3, index=world["index"])] == [3]


def test_a_repeated_dataset_counts_once(world, cli_run, tmp_path):
    router = copy_router(world, tmp_path)
    build = ["build-router", *model_args(world, tmp_path), "--router", router, "--kind", "pilot", "--no-lexical",
             "--max-queries", "10"]
    once, twice = cli_run(*build, "--dataset", "toy"), cli_run(*build, "--dataset", "toy", "--dataset", "toy")
    assert once.exit_code == 0 and twice.exit_code == 0, twice.output
    assert "\t4 labelled queries\t" in once.output and once.output == twice.output  # 4 train queries, not 8
    assert json.loads((router / "routers" / "pilot" / "routing.json").read_text())["info"]["datasets"] == ["toy"]
    out = tmp_path / "rows.json"
    result = cli_run("evaluate", *model_args(world, tmp_path), "--dataset", "toy", "--dataset", "toy",
                     "--output-json", out)
    assert result.exit_code == 0 and len(json.loads(out.read_text())["results"]) == 1, result.output


# Hidden case: the Python API checks every input before anything is written, as the CLI does.
@pytest.mark.parametrize("change, message", [
    ({"kinds": ["pilot", "nope"]}, "unknown router kind(s) 'nope'; valid: pilot"),
    ({"fallback": 2.0}, "fallback must be 'none', 'auto' or a threshold in [0, 1), got 2.0"),
    ({"novelty": float("nan")}, "novelty must be 'none', 'auto' or a threshold in [0, 1), got nan"),
    ({"fusion": "max"}, "unknown fusion 'max'; valid: convex, rrf"),
    ({"route_on": "layers"}, "unknown routing input 'layers'"),
    ({"max_queries": 0}, "max_queries must be a positive integer, got 0"),
])
def test_build_routers_checks_every_setting_before_any_work(world, tmp_path, change, message):
    from experts.workflows import build_routers

    router = copy_router(world, tmp_path)
    before = sha256_tree(router)
    arguments = {"kinds": ["pilot"], "model": world["model"], **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        build_routers(router, world["data"], tmp_path / "cache", ["toy"], **arguments)
    assert sha256_tree(router) == before and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("workflow, arguments, error, message", [
    ("add_expert", {"index_type": "annoy"}, ValueError, "unknown index type 'annoy'"),
    ("add_expert", {"config": {"max_steps": 2}}, TypeError, "config must be a TrainConfig"),
    ("run_comparison", {"index_type": "annoy"}, ValueError, "unknown index type 'annoy'"),
    ("run_comparison", {"overrides": {"toy": {"max_steps": "2"}}}, ValueError, "max_steps must be an integer"),
    ("run_comparison", {"route_on": "layers"}, ValueError, "unknown routing input 'layers'"),
])
def test_workflows_check_every_input_before_writing(world, tmp_path, workflow, arguments, error, message):
    from experts import workflows

    with pytest.raises(error, match=re.escape(message)):
        if workflow == "add_expert":
            workflows.add_expert(tmp_path / "r", world["data"], tmp_path / "cache", "toy", "x",
                                 **{"config": TrainConfig(**FAST), "model": world["model"], **arguments})
        else:
            workflows.run_comparison(world["data"], tmp_path / "r", tmp_path / "cache", ["toy"],
                                     model=world["model"], **arguments)
    assert sorted(os.listdir(tmp_path)) == []  # no router directory, no cache


# Hidden case: files other tools parse are well formed whatever the ids hold (a TREC line is 6 fields).
@pytest.mark.parametrize("field, bad", [("query", "q volcano"), ("document", "volcano\t1"),
                                        ("document", "volcano\n1"), ("document", "volcano\u20281")])
def test_ids_a_trec_line_cannot_hold_are_refused_before_any_work(world, cli_run, tmp_path, field, bad):
    data = shutil.copytree(world["data"], tmp_path / "beir")
    toy = data / "toy"
    if field == "query":
        for name in ("queries.jsonl", "qrels/test.tsv"):
            (toy / name).write_text((toy / name).read_text().replace("q-volcano", bad))
    else:
        corpus = gzip.decompress((toy / "corpus.jsonl.gz").read_bytes()).decode()
        (toy / "corpus.jsonl.gz").write_bytes(gzip.compress(corpus.replace('"volcano-2"', json.dumps(bad)).encode()))
    result = cli_run("evaluate", "--data-dir", data, "--model", world["model"], "--cache-dir", tmp_path / "cache",
                     "--dataset", "toy", "--run-dir", tmp_path / "runs")
    assert_one_line_error(result, f"{field} id {bad!r} cannot be written to a TREC run")
    assert sorted(os.listdir(tmp_path)) == ["beir"]  # nothing indexed, no run directory

