import json
import subprocess
import sys
from importlib.metadata import version

import pytest
from click.testing import CliRunner
from conftest import REPO

import cli


@pytest.fixture
def run(data_dir, tmp_path, toy_model_dir, monkeypatch):
    monkeypatch.delenv("ROUTERRETRIEVER_DATA_DIR", raising=False)

    def invoke(*args, data=True):
        common = ["--data-dir", str(data_dir)] if data else []
        extra = list(common)
        if args and args[0] in ("index", "evaluate"):
            extra += ["--model", str(toy_model_dir), "--cache-dir", str(tmp_path / "cache")]
        return CliRunner().invoke(cli.main, ["-q", *args[:1], *extra, *args[1:]] if args[0] != "search"
                                  else ["-q", *args], catch_exceptions=False)

    return invoke


def test_evaluate_writes_json_and_table(run, data_dir, tmp_path, toy_model_dir):
    from experts.workflows import evaluate_systems

    out = tmp_path / "results.json"
    result = run("evaluate", "--dataset", "toy", "--output-json", str(out), "--run-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "nDCG@10" in result.output and "toy" in result.output
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"dataset", "split", "system", "ndcg@10", "recall@100", "map@100", "mrr@10", "queries"}
    assert (row["dataset"], row["split"], row["system"], row["queries"]) == ("toy", "test", "base", 6)
    assert f"{row['ndcg@10']:.4f}" in result.output  # the table shows what the JSON holds
    rows, default = evaluate_systems(data_dir, ["toy"], ["base"], model=str(toy_model_dir),
                                     cache_dir=tmp_path / "cache", output_json=tmp_path / "python.json")
    assert [r.row() for r in rows] == [row] and default is None  # the workflow from Python: the CLI's result
    assert json.loads((tmp_path / "python.json").read_text()) == json.loads(out.read_text())
    run_lines = (tmp_path / "runs" / "toy.test.base.trec").read_text().splitlines()
    assert len(run_lines) == 6 * 20 and run_lines[0].split()[1] == "Q0"


def test_index_then_search(run, tmp_path, toy_model_dir):
    out = tmp_path / "idx"
    result = run("index", "--dataset", "toy", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "20 documents" in result.output
    source = json.loads((out / "index.json").read_text())["source"]
    assert source["dataset"] == "toy" and len(source["corpus_sha256"]) == 64  # what the index was built from
    again = run("index", "--dataset", "toy", "--output", str(out))
    assert again.exit_code != 0 and "already exists; pass --overwrite" in again.output
    found = run("search", "--index", str(out), "--model", str(toy_model_dir), "--query", "blood sugar hormone",
                "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    line = json.loads(found.stdout.splitlines()[0])
    assert line["query_id"] == "q1" and len(line["hits"]) == 3
    assert line["system"] == "base" and line["unfamiliar"] is False  # no router: the base answers, nothing is new
    on_cpu = run("search", "--index", str(out), "--model", str(toy_model_dir), "--query", "blood sugar hormone",
                 "-k", "3", "--json", "--device", "cpu")  # the torch search path, as on a GPU
    assert on_cpu.exit_code == 0, on_cpu.output
    device_hits = json.loads(on_cpu.stdout.splitlines()[0])["hits"]
    assert [h["doc_id"] for h in device_hits] == [h["doc_id"] for h in line["hits"]]
    bad = run("search", "--index", str(out), "--model", str(toy_model_dir), "--query", "x", "--device", "tpu7")
    assert bad.exit_code == 1 and "Error: cannot use device 'tpu7'" in bad.output and "Traceback" not in bad.output


def test_index_in_bf16_is_its_own_cache_entry(run, tmp_path):
    """``index --precision bf16``: the autocast corpus path, recorded and cached apart from the fp32 index."""
    fp32 = run("index", "--dataset", "toy", "--no-lexical")
    bf16 = run("index", "--dataset", "toy", "--no-lexical", "--precision", "bf16", "--device", "cpu",
               "--batch-size", "8")
    assert fp32.exit_code == 0 and bf16.exit_code == 0, bf16.output
    paths = [line.split("\t")[0] for line in (fp32.output.strip(), bf16.output.strip())]
    assert paths[0] != paths[1] and paths[1].endswith("-flat-bf16")
    assert json.loads((tmp_path / "cache" / "indexes" / paths[1].rsplit("/", 1)[1] / "index.json").read_text()
                      )["precision"] == "bf16"
    ray = run("index", "--dataset", "toy", "--encoder", "ray", "--device", "cuda")
    assert ray.exit_code == 2 and "--device and --batch-size are for --encoder local" in ray.output


@pytest.mark.parametrize("args, message", [
    (("evaluate", "--dataset", "missing"), "Error: dataset 'missing' not found: looked for"),
    (("evaluate", "--dataset", "toy", "--split", "dev"),
     "Error: unknown split 'dev' for dataset 'toy'; available: test, train"),
    (("evaluate", "--dataset", "toy", "--system", "magic"),
     "Invalid value for '--system': unknown system 'magic'; available: base"),
    (("index", "--dataset", "toy", "--index-type", "annoy"), "Invalid value for '--index-type'"),
])
def test_user_errors_are_one_line(run, args, message):
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_no_data_dir(run):
    result = run("evaluate", "--dataset", "toy", data=False)
    assert result.exit_code != 0
    assert "Error: no data directory: pass --data-dir or set ROUTERRETRIEVER_DATA_DIR" in result.output


def test_search_with_wrong_model_is_clear(run, tmp_path, other_model_dir):
    built = run("index", "--dataset", "toy", "--output", str(tmp_path / "idx"))
    assert built.exit_code == 0, built.output
    result = run("search", "--index", str(tmp_path / "idx"), "--model", str(other_model_dir), "--query", "x")
    assert result.exit_code != 0
    assert "rebuild the index with this model" in result.output and "Traceback" not in result.output


def test_train_expert_config_json(run, tmp_path, toy_model_dir):
    router = tmp_path / "router"
    common = ("--dataset", "toy", "--router", str(router), "--model", str(toy_model_dir),
              "--cache-dir", str(tmp_path / "cache"))
    for bad, message in (('{"max_steps": 2', "not valid JSON"), ("[1]", "must be a JSON object"),
                         ('{"steps": 2}', "'steps'"), ('{"max_steps": 0}', "max_steps must be a positive integer")):
        result = run("train-expert", *common, "--name", "bad", "--config", bad)
        assert result.exit_code != 0 and message in result.output, result.output
    assert not (router / "experts" / "bad").exists()
    result = run("train-expert", *common, "--name", "tiny", "--config", '{"max_steps": 2, "learning_rate": 0.1}',
                 "--learning-rate", "0.01")
    assert result.exit_code == 0, result.output
    hyper = json.loads((router / "experts" / "tiny" / "expert.json").read_text())["training"]["hyperparameters"]
    assert (hyper["max_steps"], hyper["learning_rate"]) == (2, 0.01)  # an option beats the same field in --config


def test_train_expert_anchors(run, data_dir, tmp_path, toy_model_dir):
    from conftest import write_toy_dataset

    write_toy_dataset(data_dir, "other")
    router = tmp_path / "router"
    common = ("train-expert", "--dataset", "toy", "--router", str(router), "--model", str(toy_model_dir),
              "--cache-dir", str(tmp_path / "cache"), "--config", '{"max_steps": 2}')
    for args, message in ((("--anchor-weight", "1"), "an anchor weight > 0 (got 1.0) and anchor datasets"),
                          (("--anchor-dataset", "other"), "an anchor weight > 0 (got 0.0) and anchor datasets"),
                          (("--anchor-weight", "1", "--anchor-dataset", "toy"), "'toy' is the expert's own dataset"),
                          (("--anchor-weight", "1", "--anchor-dataset", "nope"), "nope"),
                          (("--config", '{"max_steps": 2, "anchor_documents": 3}'),
                           "anchor_documents is 3 but anchor_weight is 0")):
        result = run(*common, "--name", "bad", *args)
        assert result.exit_code != 0 and message in result.output, result.output
    assert not (router / "experts" / "bad").exists()
    result = run(*common, "--name", "anchored", "--anchor-weight", "1", "--anchor-dataset", "other")
    assert result.exit_code == 0, result.output
    training = json.loads((router / "experts" / "anchored" / "expert.json").read_text())["training"]
    assert (training["anchor_texts"], training["hyperparameters"]["anchor_weight"]) == (4, 1.0)
    result = run(*common, "--name", "long", "--anchor-weight", "1", "--anchor-dataset", "other",
                 "--config", '{"max_steps": 2, "anchor_documents": 3}')  # and 3 of other's documents
    assert result.exit_code == 0, result.output
    training = json.loads((router / "experts" / "long" / "expert.json").read_text())["training"]
    assert (training["anchor_texts"], training["hyperparameters"]["anchor_documents"]) == (7, 3)


def test_build_router_refuses_an_unknown_unfamiliar_policy(run, tmp_path):
    result = run("build-router", "--router", str(tmp_path / "r"), "--dataset", "toy", "--unfamiliar", "bm25")
    assert result.exit_code == 2 and "Invalid value for '--unfamiliar'" in result.output
    assert "'bm25' is not one of 'auto', 'calibrated'" in result.output and not (tmp_path / "r").exists()


def test_benchmark_from_python_matches_the_cli(run, data_dir, tmp_path, toy_model_dir, monkeypatch):
    """``run_benchmark`` writes the JSON and tables the command writes (timings aside), and ``cache_dir=None``
    caches query vectors in the default cache directory instead of failing after training."""
    from conftest import write_toy_dataset

    from experts.workflows import benchmark_results, run_benchmark
    from retriever.storage.cache import CACHE_DIR_ENV

    write_toy_dataset(data_dir, "other")
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"datasets": {"toy": {"max_steps": 2}, "other": {"max_steps": 2}}}))
    result = run("benchmark", "--router", str(tmp_path / "cli-router"), "--model", str(toy_model_dir),
                 "--cache-dir", str(tmp_path / "cli-cache"), "--expert-dataset", "toy", "--expert-dataset", "other",
                 "--no-multitask", "--train-overrides", str(overrides), "--output-json", str(tmp_path / "cli.json"),
                 "--markdown", str(tmp_path / "cli.md"))
    assert result.exit_code == 0, result.output
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "default-cache"))
    comparison, report = run_benchmark(data_dir, tmp_path / "python-router", None, ["toy", "other"],
                                       model=str(toy_model_dir), multitask=False, train_overrides=overrides,
                                       output_json=tmp_path / "python.json", markdown=tmp_path / "python.md")
    assert (tmp_path / "default-cache" / "query-vectors").is_dir()

    def untimed(text):  # the wall times differ from run to run; nothing else may
        data = json.loads(text)
        return {**data, "seconds": sorted(data["seconds"])}

    cli_json, python_json = (tmp_path / "cli.json").read_text(), (tmp_path / "python.json").read_text()
    assert untimed(python_json) == untimed(cli_json)
    assert json.loads(json.dumps(benchmark_results(comparison))) == json.loads(python_json)
    assert {r["system"] for r in json.loads(cli_json)["results"]} >= {"base", "bm25", "pilot", "expert:toy"}

    def tables(text):
        return [line for line in text.splitlines() if not line.startswith("Wall time")]

    assert tables((tmp_path / "python.md").read_text()) == tables((tmp_path / "cli.md").read_text())
    assert tables(report) == tables(result.output.strip())


def test_verbosity_options_go_before_or_after_the_subcommand(data_dir, tmp_path, toy_model_dir):
    """``-q``/``-v`` on the group or on the command (or both: ``-v`` counts add up); ``-q`` after the subcommand
    silences progress bars as before it."""
    common = ["--data-dir", str(data_dir), "--model", str(toy_model_dir), "--cache-dir", str(tmp_path / "cache")]

    def index(*flags, where):
        args = [*flags, "index", *common] if where == "before" else ["index", *common, *flags]
        return CliRunner().invoke(cli.main, [*args, "--dataset", "toy", "--output", str(tmp_path / where),
                                             "--overwrite"], catch_exceptions=False)

    for where in ("before", "after"):
        quiet, loud = index("-q", where=where), index(where=where)
        assert quiet.exit_code == 0 and loud.exit_code == 0, quiet.output + loud.output
        assert "encoding corpus" not in quiet.output and "encoding corpus: 100%" in loud.output  # the bar
        debug = index("-v", "-v", where=where)
        assert debug.exit_code == 0 and "DEBUG " in debug.output  # -vv: debug logging
    mixed = CliRunner().invoke(cli.main, ["-v", "index", *common, "-v", "-q", "--dataset", "toy", "--output",
                                          str(tmp_path / "mixed"), "--no-lexical"], catch_exceptions=False)
    assert mixed.exit_code == 0 and "DEBUG " in mixed.output and "encoding corpus" not in mixed.output


def test_version():
    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0 and result.output == f"routerretriever, version {version('routerretriever')}\n"


def test_help_imports_neither_torch_nor_faiss():
    """``--help`` (of the group and of every command) answers without loading torch or FAISS."""
    commands = [[], *[[name] for name in cli.main.commands], ["experts", "list"], ["experts", "export"]]
    code = f"""
import sys
import cli
for args in {commands!r}:
    try:
        cli.main([*args, "--help"])
    except SystemExit as done:
        assert done.code == 0, (args, done.code)
print(sorted(m for m in ("torch", "faiss", "transformers", "sentence_transformers") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: " in done.stdout and "evaluate" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_quiet_commands_print_only_their_results(tmp_path, toy_model_dir):
    """Real commands in a fresh process with -q (after the subcommand): standard error stays empty (no bm25s DEBUG
    lines, no transformers FutureWarning from peft, no progress bars)."""
    from conftest import write_toy_dataset

    write_toy_dataset(tmp_path / "beir")
    common = ["--data-dir", str(tmp_path / "beir"), "--model", str(toy_model_dir)]
    router = ["--router", str(tmp_path / "router"), "--cache-dir", str(tmp_path / "cache")]
    for args in (["index", *common, "--dataset", "toy", "--output", str(tmp_path / "idx")],
                 ["train-expert", *common, *router, "--dataset", "toy", "--name", "toy", "--config",
                  '{"max_steps": 2}'],
                 ["search", "--index", str(tmp_path / "idx"), "--model", str(toy_model_dir), "--query", "lava"],
                 ["evaluate", *common, "--cache-dir", str(tmp_path / "cache"), "--dataset", "toy", "--system",
                  "bm25"]):
        done = subprocess.run([sys.executable, "-m", "cli", *args, "-q"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and done.stdout and done.stderr == "", (args[0], done.stderr)


def test_unknown_system_is_a_usage_error(run):
    result = run("evaluate", "--dataset", "toy", "--system", "base", "--system", "hybird:base")
    assert result.exit_code == 2 and "Usage: " in result.output
    assert "Invalid value for '--system': unknown system 'hybird:base'; available: base, expert:NAME" in result.output


def test_evaluate_json_prints_the_rows(run):
    result = run("evaluate", "--dataset", "toy", "--system", "base", "--system", "bm25", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # standard output is the JSON alone, no table
    assert [(r["dataset"], r["system"]) for r in printed["results"]] == [("toy", "base"), ("toy", "bm25")]
    assert printed["default_system"] is None and "nDCG@10" not in result.output
    both = run("evaluate", "--dataset", "toy", "--json", "--output-json", "x.json")
    assert both.exit_code == 2 and "--json prints the results JSON to standard output" in both.output


def test_experts_list_and_build_router_print_json(lexical_world, tmp_path, toy_model_dir):
    """``experts list --json`` and ``build-router --json``: what the text output says, as JSON."""
    import shutil

    router = tmp_path / "router"
    shutil.copytree(lexical_world["store"].root, router)
    model = ["--model", str(toy_model_dir)]
    listed = CliRunner().invoke(cli.main, ["experts", "list", "--router", str(router), *model, "--json"])
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.stdout)
    assert [(r["name"], r["domain"], r["matches_base"]) for r in records] == [
        ("other-expert", "other", True), ("toy-expert", "toy", True)]
    text = CliRunner().invoke(cli.main, ["experts", "list", "--router", str(router), *model]).stdout.splitlines()
    assert [line.split("\t")[:2] for line in text] == [[r["name"], r["domain"]] for r in records]
    assert all(f"{r['heldout_ndcg@10']:.4f}" in line for r, line in zip(records, text, strict=True))
    built = CliRunner().invoke(cli.main, ["-q", "build-router", "--router", str(router), *model, "--data-dir",
                                          str(lexical_world["root"] / "beir"), "--cache-dir", str(tmp_path / "cache"),
                                          "--dataset", "toy", "--dataset", "other", "--kind", "pilot", "--json"])
    assert built.exit_code == 0, built.output
    report = json.loads(built.stdout)
    assert [(r["kind"], r["path"]) for r in report["routers"]] == [("pilot", str(router / "routers" / "pilot"))]
    assert {"bm25", "hybrid:base", "toy-expert"} <= set(report["routers"][0]["systems"])
    assert report["routers"][0]["labelled_queries"] == 8 and report["default_router"] in ("pilot", "classifier",
                                                                                            "dataset")


def test_confusion_figure_is_trimmed_titled_and_drops_empty_columns(tmp_path):
    """``benchmark --plot``: the figure is its content (no wide white margin), its title says which router over
    which systems and what a cell is, and a system no dataset sends 0.5% of its queries to gets no column."""
    import numpy as np
    from matplotlib.image import imread

    from eval.report import confusion_title, plot_confusion

    confusion = {"scifact": {"scifact": 290, "hybrid:base": 9, "nfcorpus": 1}, "aila": {"hybrid:base": 40}}
    title = confusion_title("pilot", confusion, default="pilot")
    assert title.startswith("pilot router over dense experts, BM25 and hybrids (the default router):\nshare of each")
    assert confusion_title("classifier", {"scifact": {"base": 3, "scifact": 1}}).startswith(
        "classifier router over dense experts:")
    assert plot_confusion(confusion, tmp_path / "c.png", title) == ["hybrid:base", "scifact"]  # nfcorpus: 0.3%
    image = imread(tmp_path / "c.png")[..., :3]
    ink = np.argwhere((image < 0.99).any(axis=2))
    (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0)
    assert (bottom - top + 1) * (right - left + 1) >= 0.9 * image.shape[0] * image.shape[1]


def test_train_expert_unlabelled_keeps_only_what_passes_the_self_check(run, data_dir, tmp_path, toy_model_dir,
                                                                        monkeypatch):
    """No judgments are read (the dataset's qrels and queries are removed); an expert that misses the self-check's
    margin is refused with the numbers and nothing is saved, --force saves it marked so."""
    import shutil

    from experts.workflows import unlabelled

    for path in ("qrels", "queries.jsonl"):
        target = data_dir / "toy" / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    router = tmp_path / "router"
    common = ("train-expert", "--dataset", "toy", "--router", str(router), "--model", str(toy_model_dir),
              "--cache-dir", str(tmp_path / "cache"), "--config", '{"max_steps": 2}')
    result = run(*common, "--name", "x", "--force")
    assert result.exit_code == 2 and "--force only go with --unlabelled" in result.output
    result = run(*common, "--name", "x", "--unlabelled", "--split", "dev")
    assert result.exit_code == 2 and "--unlabelled reads no split's judgments; drop --split dev" in result.output
    queries = tmp_path / "queries.txt"
    queries.write_text("solar panels on homes\nblue whales\n")
    result = run(*common, "--name", "x", "--unlabelled", "--queries", str(queries))
    assert result.exit_code == 1 and "pass --force to train one all the same" in result.output, result.output
    monkeypatch.setattr(unlabelled, "SELF_CHECK_MARGIN", 1.0)  # beyond any expert
    result = run(*common, "--name", "refused", "--unlabelled")
    assert result.exit_code == 1 and "unlabelled expert 'refused' not saved" in result.output, result.output
    assert "pseudo-queries from documents it did not train on" in result.output and "95% interval" in result.output
    assert "--force saves it anyway" in result.output
    assert not (router / "experts" / "refused").exists()
    result = run(*common, "--name", "forced", "--unlabelled", "--force")
    assert result.exit_code == 0 and "FAILED, saved because of --force" in result.output, result.output
    record = json.loads((router / "experts" / "forced" / "expert.json").read_text())["unlabelled"]
    assert record["source"] == "corpus" and record["forced"] and not record["self_check"]["passed"]
    monkeypatch.setattr(unlabelled, "SELF_CHECK_MARGIN", -1.0)
    result = run(*common, "--name", "kept", "--unlabelled", "--pseudo-queries", "12")
    assert result.exit_code == 0 and "trained on 10 pseudo-queries; self-check: 10 of other documents" in result.output
    record = json.loads((router / "experts" / "kept" / "expert.json").read_text())["unlabelled"]
    assert record["self_check"]["passed"] and not record["forced"]
    # 20 documents: the check keeps half of them, training the other half (not the 12 asked)
    assert record["pseudo_queries"] == record["self_check"]["check_queries"] == 10
    queries.write_text("".join(f"{word} and more about it\n" for word in (
        "solar", "whales", "bread", "coffee", "rivers", "volcano", "panels", "ocean", "baking", "espresso")))
    result = run(*common, "--name", "from-queries", "--unlabelled", "--queries", str(queries), "--force")
    assert result.exit_code == 0, result.output
    record = json.loads((router / "experts" / "from-queries" / "expert.json").read_text())["unlabelled"]
    assert record["source"] == "queries" and record["self_check"]["check_queries"] >= 2  # checked on sentences


def test_routers_fit_on_a_dataset_without_judgments(run, data_dir, tmp_path, toy_model_dir, monkeypatch):
    """``build-router --unlabelled-dataset``: a dataset without training judgments is scored on pseudo-queries from
    its corpus; their labels are auto systems (BM25 decided at search time), its expert's hybrid is not calibrated
    on them, adding an expert refits without judgments again, and evaluation and search answer an auto system by
    its hybrid or its dense ranking. Given as ``--dataset`` it fails, saying what to do."""
    import numpy as np
    from conftest import write_toy_dataset

    from experts.routing import cached_routing_data
    from experts.routing_cache import PSEUDO_TIE
    from experts.workflows import unlabelled
    from retriever import RouterRetriever, load_encoder
    from retriever.routers.directory import RouterDirectory

    write_toy_dataset(data_dir, "other")
    (data_dir / "toy" / "qrels" / "train.tsv").unlink()  # its test split stays, to evaluate on
    monkeypatch.setattr(unlabelled, "SELF_CHECK_MARGIN", -1.0)
    router, model = tmp_path / "router", ("--model", str(toy_model_dir), "--cache-dir", str(tmp_path / "cache"))
    trained = run("train-expert", "--dataset", "toy", "--name", "toy-free", "--unlabelled", "--pseudo-queries", "12",
                  "--router", str(router), *model, "--config", '{"max_steps": 2}')
    assert trained.exit_code == 0, trained.output
    build = ("build-router", "--router", str(router), *model, "--max-queries", "8")
    result = run(*build, "--dataset", "toy")
    assert result.exit_code == 1 and "give it as --unlabelled-dataset" in result.output, result.output
    result = run(*build, "--dataset", "toy", "--unlabelled-dataset", "toy")
    assert result.exit_code == 1 and "'toy' given both with judgments" in result.output, result.output
    result = run(*build, "--unlabelled-dataset", "toy", "--dataset", "other", "--kind", "pilot", "--kind", "dataset",
                 "--json")
    assert result.exit_code == 0, result.output
    systems = json.loads(result.stdout)["routers"][0]["systems"]
    assert {"auto:base", "auto:toy-free", "hybrid:toy-free"} <= set(systems)
    store = RouterDirectory(router, load_encoder(str(toy_model_dir)).info)
    info = store.load_router("pilot").info
    assert info["unlabelled"] == ["toy"] and info["datasets"] == ["other", "toy"]
    data = cached_routing_data(store, info["datasets"], info["lexical_keys"], unlabelled=info["unlabelled"])
    pseudo = [label for label, d in zip(data.labels, data.datasets, strict=True) if d == "toy"]
    judged = [label for label, d in zip(data.labels, data.datasets, strict=True) if d == "other"]
    assert len(pseudo) == 8 and all(label.startswith("auto:") for label in pseudo)
    assert judged and not any(label.startswith("auto:") for label in judged)
    assert "hybrid:toy-free" not in data.fusion.weights and "hybrid:base" in data.fusion.weights
    rows = [i for i, d in enumerate(data.datasets) if d == "toy"]  # lexical systems unmeasured, the base as it is
    column = {system: data.scores[rows, data.systems.index(system)] for system in ("base", "auto:base", "bm25")}
    assert np.allclose(column["base"] + PSEUDO_TIE, column["auto:base"], rtol=0, atol=1e-12)
    assert (column["base"] < column["auto:base"]).all() and not column["bm25"].any()
    added = run("train-expert", "--dataset", "other", "--name", "other-expert", "--router", str(router), *model,
                "--config", '{"max_steps": 2}')
    assert added.exit_code == 0 and "pilot" in added.output, added.output
    assert "auto:other-expert" in store.load_router("pilot").systems
    removed = run("experts", "remove", "--router", str(router), "--model", str(toy_model_dir), "other-expert",
                  data=False)
    assert removed.exit_code == 0, removed.output  # refitted from the cache: still without toy's judgments
    assert store.load_router("pilot").info["unlabelled"] == ["toy"]
    added = run("train-expert", "--dataset", "other", "--name", "other-expert", "--router", str(router), *model,
                "--config", '{"max_steps": 2}')
    assert added.exit_code == 0, added.output
    evaluated = run("evaluate", "--dataset", "toy", "--router", str(router), "--system", "dataset", "--system",
                    "auto:toy-free", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert [r["system"] for r in json.loads(evaluated.stdout)["results"]] == ["dataset", "auto:toy-free"]
    index = next((tmp_path / "cache" / "indexes").glob("toy*"))
    found = RouterRetriever.load(router, "dataset", model=str(toy_model_dir)).search(
        ["what is known about solar panels"], index=index)
    assert found[0].hits and not found[0].system.startswith("auto:")  # it names what answered


def test_benchmark_unlabelled_reads_no_training_judgment(run, data_dir, tmp_path, toy_model_dir, monkeypatch):
    """``benchmark --unlabelled`` with every training split's qrels gone: experts from pseudo-queries, kept only if
    they pass the self-check (a refused one is reported and the routers route without it), routers fitted on
    pseudo-queries, no multi-task expert; test qrels score it."""
    from conftest import write_toy_dataset

    from experts.workflows import unlabelled

    write_toy_dataset(data_dir, "other")
    for name in ("toy", "other"):
        (data_dir / name / "qrels" / "train.tsv").unlink()
    overrides = tmp_path / "overrides.json"
    anchored = {"max_steps": 2, "anchor_weight": 1.0}  # anchored on the other corpus's sentences, not its queries
    overrides.write_text(json.dumps({"datasets": {"toy": anchored, "other": anchored}}))

    def benchmark(router, margin):
        monkeypatch.setattr(unlabelled, "SELF_CHECK_MARGIN", margin)
        result = run("benchmark", "--unlabelled", "--router", str(tmp_path / router), "--model", str(toy_model_dir),
                     "--cache-dir", str(tmp_path / "cache"), "--expert-dataset", "toy", "--expert-dataset", "other",
                     "--max-queries", "8", "--train-overrides", str(overrides), "--output-json", "-")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout), result.stderr

    kept, _ = benchmark("kept", -1.0)
    systems = {r["system"] for r in kept["results"]}
    assert {"expert:toy", "expert:other", "pilot", "default"} <= systems and "multitask" not in systems
    assert kept["refused_experts"] == {} and kept["fusion"]["weights"] == {}  # nothing judged to calibrate on
    routing = json.loads((tmp_path / "kept" / "routers" / "pilot" / "routing.json").read_text())
    assert routing["info"]["unlabelled"] == ["toy", "other"]
    assert set(routing["info"]["label_counts"]) >= {"auto:toy", "auto:other"}
    assert all(expert["unlabelled"]["self_check"]["passed"] for expert in (
        json.loads((tmp_path / "kept" / "experts" / name / "expert.json").read_text()) for name in ("toy", "other")))
    assert all(json.loads((tmp_path / "kept" / "experts" / name / "expert.json").read_text())["training"]
               ["anchor_texts"] > 0 for name in ("toy", "other"))
    refused, report = benchmark("refused", 1.0)
    assert set(refused["refused_experts"]) == {"toy", "other"} and not (tmp_path / "refused" / "experts").exists()
    assert "Refused by the self-check" in report and "pilot" in {r["system"] for r in refused["results"]}
    labelled = tmp_path / "labelled"  # an expert trained with judgments: refused before any work, nothing written
    write_toy_dataset(tmp_path / "judged-data")  # toy's judgments back, for one labelled expert
    (data_dir / "toy" / "qrels" / "train.tsv").write_bytes((tmp_path / "judged-data" / "toy" / "qrels" /
                                                            "train.tsv").read_bytes())
    trained = run("train-expert", "--dataset", "toy", "--name", "judged", "--router", str(labelled), "--model",
                  str(toy_model_dir), "--cache-dir", str(tmp_path / "cache"), "--config", '{"max_steps": 2}')
    assert trained.exit_code == 0, trained.output
    result = run("benchmark", "--unlabelled", "--router", str(labelled), "--model", str(toy_model_dir),
                 "--cache-dir", str(tmp_path / "cache"), "--expert-dataset", "toy", "--output-json", "-")
    assert result.exit_code == 1 and "holds experts trained with judgments (judged)" in result.output, result.output
    assert sorted(p.name for p in labelled.iterdir()) == ["experts", "router.json"]
