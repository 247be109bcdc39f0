"""``evaluate --index DIR --queries FILE --qrels FILE``: a user's own indexed collection measured without a BEIR
folder (``experts.workflows.evaluation.evaluate_index``, ``eval.data.load_split``), with the same rows as
``evaluate --dataset`` and every bad input refused in one line before any model loads."""

import gzip
import json
import shutil

import pytest
from click.testing import CliRunner

import cli
from eval.data import load_split, open_dataset


@pytest.fixture
def run(data_dir, tmp_path, toy_model_dir, monkeypatch):
    monkeypatch.delenv("ROUTERRETRIEVER_DATA_DIR", raising=False)

    def invoke(*args, model=None):
        model = str(model or toy_model_dir)
        return CliRunner().invoke(cli.main, ["-q", args[0], "--data-dir", str(data_dir), "--model", model,
                                             "--cache-dir", str(tmp_path / "cache"), *args[1:]],
                                  catch_exceptions=False)

    return invoke


@pytest.fixture
def own(run, data_dir, tmp_path):
    """The toy dataset indexed to ``mine/`` (BM25 beside it), its test queries and qrels as plain files."""
    index = tmp_path / "mine"
    assert run("index", "--dataset", "toy", "--output", str(index)).exit_code == 0
    split = open_dataset(data_dir, "toy").split("test")
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in split.queries.items()))
    qrels = tmp_path / "test.tsv"
    shutil.copy(data_dir / "toy" / "qrels" / "test.tsv", qrels)
    return index, queries, qrels


def test_index_with_own_files_scores_as_the_dataset(run, own, tmp_path):
    index, queries, qrels = own
    systems = ["--system", "base", "--system", "bm25", "--system", "hybrid:base"]
    by_name = run("evaluate", "--dataset", "toy", *systems, "--output-json", str(tmp_path / "dataset.json"))
    assert by_name.exit_code == 0, by_name.output
    result = run("evaluate", "--index", str(index), "--queries", str(queries), "--qrels", str(qrels), *systems,
                 "--output-json", str(tmp_path / "index.json"), "--run-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    expected = json.loads((tmp_path / "dataset.json").read_text())
    got = json.loads((tmp_path / "index.json").read_text())
    assert [r["dataset"] for r in got["results"]] == ["mine"] * 3  # the index directory's name
    assert got == {**expected, "results": [{**r, "dataset": "mine"} for r in expected["results"]]}
    assert "mine" in result.output and f"{got['results'][0]['ndcg@10']:.4f}" in result.output  # the same table
    assert (tmp_path / "runs" / "mine.test.base.trec").is_file()


def test_every_bad_input_is_one_line_and_writes_nothing(run, own, tmp_path, data_dir):
    index, queries, qrels = own
    out = tmp_path / "out.json"

    def bad(name, text):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    header = "query-id\tcorpus-id\tscore\n"
    given = ["--index", str(index), "--queries", str(queries), "--qrels", str(qrels)]
    usage = [  # exit 2: the usage line, then one error line
        (["--dataset", "toy", *given], "--index and --dataset cannot be used together"),
        (["--index", str(index), "--queries", str(queries)], "--index needs --queries (JSONL) and --qrels (TSV)"),
        (["--dataset", "toy", "--qrels", str(qrels)], "--queries and --qrels are for --index"),
        ([], "give --dataset NAME (repeatable), or --index DIR with --queries and --qrels"),
    ]
    for args, message in usage:
        result = run("evaluate", *args, "--output-json", str(out))
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert result.exit_code == 2 and len(errors) == 1 and errors[0].startswith(f"Error: {message}"), result.output
    qrels_file = str(qrels)
    data = [  # exit 1, one line; --model names no model, so each is caught before one loads
        (["--queries", str(tmp_path / "absent.jsonl"), "--qrels", qrels_file], "absent.jsonl: cannot read"),
        (["--queries", bad("broken.jsonl", '{"_id": "q-jazz", "text": "x"}\n{"_id": \n'), "--qrels", qrels_file],
         "broken.jsonl:2: malformed JSON"),
        (["--queries", str(queries), "--qrels", bad("score.tsv", header + "q-jazz\tjazz-1\t2\nq-jazz\tjazz-2\thigh\n")],
         "score.tsv:3: score must be an integer"),
        (["--queries", str(queries), "--qrels", bad("cols.tsv", header + "q-jazz\tjazz-1\n")],
         "cols.tsv:2: expected 3 tab-separated columns"),
        (["--queries", str(queries), "--qrels", bad("ghostq.tsv", header + "q-jazz\tjazz-1\t1\nq-ghost\tjazz-1\t1\n"
                                                    "q-other\tjazz-2\t1\n")],
         "ghostq.tsv:3: query id 'q-ghost' is not in " + str(queries) + " (2 judged query id(s) missing)"),
        (["--queries", str(queries), "--qrels", bad("ghostd.tsv", header + "q-jazz\tjazz-1\t1\nq-jazz\tgone-1\t1\n"
                                                    "q-rust\tgone-2\t1\nq-rust\tgone-1\t0\n")],
         f"ghostd.tsv: 2 judged document(s) are not in index {index}, the first 'gone-1'"),
        (["--queries", str(queries), "--qrels", bad("empty.tsv", header)], "empty.tsv: no judgments"),
    ]
    for args, message in data:
        result = run("evaluate", "--index", str(index), *args, "--output-json", str(out),
                     model=tmp_path / "no-such-model")
        assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output, result.output
    absent = run("evaluate", "--index", str(tmp_path / "nowhere"), "--queries", str(queries), "--qrels", qrels_file,
                 "--output-json", str(out), model=tmp_path / "no-such-model")
    assert absent.exit_code == 1 and absent.output.count("\n") == 1 and "nowhere" in absent.output, absent.output
    assert not out.exists()


def test_gzipped_files_read_as_plain_ones(own, tmp_path):
    _, queries, qrels = own
    zipped = []
    for path in (queries, qrels):
        zipped.append(tmp_path / f"{path.name}.gz")
        zipped[-1].write_bytes(gzip.compress(path.read_bytes()))
    plain = load_split(queries, qrels)
    assert plain.qrels and load_split(*zipped) == plain


def test_index_given_as_dot_is_named_after_its_directory(run, own, tmp_path, monkeypatch):
    index, queries, qrels = own
    monkeypatch.chdir(index)
    out = tmp_path / "dot.json"
    result = run("evaluate", "--index", ".", "--queries", str(queries), "--qrels", str(qrels), "--system", "bm25",
                 "--output-json", str(out))
    assert result.exit_code == 0, result.output
    assert [r["dataset"] for r in json.loads(out.read_text())["results"]] == ["mine"]  # not ""; BM25 found beside


def test_bm25_needs_the_lexical_index_beside(run, own, tmp_path):
    index, queries, qrels = own
    shutil.rmtree(f"{index}-bm25")
    out = tmp_path / "out.json"
    base = run("evaluate", "--index", str(index), "--queries", str(queries), "--qrels", str(qrels))
    assert base.exit_code == 0, base.output  # a dense system does not need it
    result = run("evaluate", "--index", str(index), "--queries", str(queries), "--qrels", str(qrels),
                 "--system", "bm25", "--output-json", str(out))
    assert result.exit_code == 1 and "no lexical index was found beside" in result.output, result.output
    assert result.output.count("\n") == 1 and not out.exists()


def test_milvus_collection_scores_as_the_dataset(run, data_dir, tmp_path):
    """``--backend milvus --uri``: ``--index`` names a collection (rows carry its name), BM25 from its own side."""
    pytest.importorskip("pymilvus")
    milvus = ["--backend", "milvus", "--uri", str(tmp_path / "milvus" / "m.db")]
    assert run("index", "--dataset", "toy", *milvus, "--output", "mine").exit_code == 0
    split = open_dataset(data_dir, "toy").split("test")
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in split.queries.items()))
    systems = ["--system", "base", "--system", "bm25"]
    by_name = run("evaluate", "--dataset", "toy", *systems, *milvus, "--output-json", str(tmp_path / "dataset.json"))
    assert by_name.exit_code == 0, by_name.output
    result = run("evaluate", "--index", "mine", "--queries", str(queries), "--qrels",
                 str(data_dir / "toy" / "qrels" / "test.tsv"), *systems, *milvus,
                 "--output-json", str(tmp_path / "index.json"))
    assert result.exit_code == 0, result.output
    expected = json.loads((tmp_path / "dataset.json").read_text())
    got = json.loads((tmp_path / "index.json").read_text())
    assert got == {**expected, "results": [{**r, "dataset": "mine"} for r in expected["results"]]}
