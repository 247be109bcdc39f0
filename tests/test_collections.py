"""Your own documents (``retriever.index.collection``): collection files in every format index like the BEIR corpus
they hold, and every malformed row is one line naming the file and the line or row."""

import csv
import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import cli
from eval.data import open_dataset
from experts.workflows.indexing import index_dataset
from retriever.index.collection import CollectionError, open_collection
from retriever.index.faiss_index import build_index


@pytest.fixture
def toy_docs(data_dir):
    return list(open_dataset(data_dir, "toy").corpus())


def _records(docs, extra=True):
    return [{"_id": d.id, "title": d.title, "text": d.text, **({"lang": "en", "n": i} if extra else {})}
            for i, d in enumerate(docs)]


def write_collection(path, records, fmt):
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
        return path
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            handle.writelines(json.dumps(r) + "\n" for r in records)
        else:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]), delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            writer.writerows(records)
    return path


@pytest.mark.parametrize("name, fmt", [("c.jsonl", "jsonl"), ("c.jsonl.gz", "jsonl"), ("c.csv", "csv"),
                                       ("c.csv.gz", "csv"), ("c.tsv", "tsv"), ("c.tsv.gz", "tsv"),
                                       ("c.parquet", "parquet")])
def test_every_format_indexes_like_the_beir_corpus(name, fmt, toy_docs, data_dir, toy_encoder, tmp_path):
    collection = open_collection(write_collection(tmp_path / name, _records(toy_docs), fmt))
    docs = list(collection.corpus())
    assert [(d.id, d.title, d.text) for d in docs] == [(d.id, d.title, d.text) for d in toy_docs]
    expected_n = [str(i) for i in range(len(docs))] if fmt in ("csv", "tsv") else list(range(len(docs)))
    assert [d.metadata for d in docs] == [{"lang": "en", "n": n} for n in expected_n]  # CSV fields are text
    mine = build_index(collection, toy_encoder, tmp_path / "idx-mine")
    beir = build_index(open_dataset(data_dir, "toy"), toy_encoder, tmp_path / "idx-beir")
    assert mine.doc_ids == beir.doc_ids
    np.testing.assert_allclose(mine.embeddings, beir.embeddings, atol=1e-6)
    assert mine.documents([docs[0].id])[docs[0].id]["metadata"] == docs[0].metadata


def test_field_options(tmp_path):
    path = write_collection(tmp_path / "faq.csv", [{"key": "a", "question": "Q?", "answer": "A.", "url": "u"}], "csv")
    [doc] = open_collection(path, id_field="key", title_field="question", text_field="answer").corpus()
    assert (doc.id, doc.title, doc.text, doc.metadata) == ("a", "Q?", "A.", {"url": "u"})


@pytest.mark.parametrize("fmt, rows, message", [
    ("jsonl", [{"_id": "a", "text": "x"}, {"title": "t", "text": "y"}], r"c\.jsonl:2: missing or empty id field '_id'"),
    ("jsonl", [{"_id": "a", "text": "x"}, {"_id": "b", "text": "  "}], r"c\.jsonl:2: document 'b' has no text"),
    ("jsonl", [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}],
     r"c\.jsonl:2: duplicate document id 'a' \(first at line 1\)"),
    ("csv", [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}],
     r"c\.csv:3: duplicate document id 'a' \(first at line 2\)"),
    ("csv", [{"id": "a", "text": "x"}], r"c\.csv:1: no column '_id' in the header \(columns: id, text\)"),
    ("parquet", [{"_id": "a", "text": "x"}, {"_id": "b", "text": ""}], r"c\.parquet: row 2: document 'b' has no text"),
    ("parquet", [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}],
     r"c\.parquet: row 2: duplicate document id 'a' \(first at row 1\)"),
    ("parquet", [{"_id": "a", "body": "x"}], r"c\.parquet: no column 'text' \(columns: _id, body\)"),
    ("tsv", [{"_id": "a", "body": "x"}], r"c\.tsv:1: no column 'text' in the header \(columns: _id, body\)"),
    ("tsv", [{"_id": "a", "text": "x"}, {"_id": "", "text": "y"}], r"c\.tsv:3: missing or empty id field '_id'"),
    ("jsonl", [{"_id": "a", "text": "x"}, {"_id": "b", "text": "y", "title": 3}],
     r"c\.jsonl:2: document 'b': field 'title' must be text, got 3"),
])
def test_malformed_rows_are_one_line_naming_file_and_row(fmt, rows, message, tmp_path, toy_encoder):
    collection = open_collection(write_collection(tmp_path / f"c.{fmt}", rows, fmt))
    with pytest.raises(CollectionError, match=message) as caught:
        build_index(collection, toy_encoder, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, content, message", [
    ("c.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', r"c\.jsonl:2: malformed JSON"),
    ("c.jsonl", '{"_id": "a", "text": "x"}\n\n["b", "y"]\n', r"c\.jsonl:3: expected a JSON object, got list"),
    ("c.csv", "_id,text\na,x\nb,y,extra\n", r"c\.csv:3: more fields than the header's 2"),
    ("c.csv", "", r"c\.csv:1: no column '_id' in the header \(columns: none\)"),
    ("c.jsonl", "\n\n", r"c\.jsonl: no documents"),
])
def test_malformed_files_write_nothing(name, content, message, tmp_path, toy_encoder):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CollectionError, match=message) as caught:
        build_index(open_collection(path), toy_encoder, tmp_path / "out")
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_truncated_gzip_names_the_file(tmp_path):
    whole = gzip.compress(b"".join(json.dumps({"_id": str(i), "text": "x " * 50}).encode() + b"\n"
                                   for i in range(200)))
    (tmp_path / "c.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CollectionError, match=r"c\.jsonl\.gz: truncated or corrupt gzip file after line \d+"):
        list(open_collection(tmp_path / "c.jsonl.gz").corpus())


@pytest.mark.parametrize("name, header, line", [("c.jsonl", b"", 900), ("c.csv.gz", b"_id,text\n", 901)])
def test_a_bad_byte_is_reported_at_its_own_line(name, header, line, tmp_path):
    """Far past the first read buffer, so a decoder working in chunks would name an earlier line."""
    rows = [json.dumps({"_id": str(i), "text": "some words"}).encode() if name.startswith("c.jsonl")
            else f"{i},some words".encode() for i in range(1000)]
    rows[899] = rows[899].replace(b"some", b"caf\xe9")
    body = header + b"\n".join(rows) + b"\n"
    (tmp_path / name).write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    with pytest.raises(CollectionError, match=rf"{name.replace('.', '[.]')}:{line}: not UTF-8 text"):
        list(open_collection(tmp_path / name).corpus())


def test_unknown_format_and_bad_options(tmp_path):
    (tmp_path / "c.xml").write_text("<docs/>")
    with pytest.raises(CollectionError, match="cannot tell the format"):
        open_collection(tmp_path / "c.xml")
    with pytest.raises(CollectionError, match="no collection file"):
        open_collection(tmp_path / "absent.jsonl")
    with pytest.raises(CollectionError, match=r"unknown collection format 'xml'; valid: jsonl, csv, tsv, parquet"):
        open_collection(tmp_path / "c.xml", format="xml")
    with pytest.raises(CollectionError, match=r"c\.parquet\.gz: a gzipped Parquet file"):
        open_collection(write_collection(tmp_path / "c.parquet.gz", [{"_id": "a", "text": "x"}], "jsonl"))
    with pytest.raises(CollectionError, match="id_field and text_field are both 'body'"):
        open_collection(tmp_path / "c.xml", format="jsonl", id_field="body", text_field="body")


def test_explicit_format_bom_and_metadata_values(tmp_path):
    """A name that says nothing needs ``format``; an Excel BOM is no part of the first column's name; JSON metadata
    keeps its structure, Parquet's NaN and dates become JSON (null, text)."""
    (tmp_path / "export.txt").write_bytes("\ufeff_id\ttext\tscore\nd1\tsome text\t0.5\n".encode())
    [doc] = open_collection(tmp_path / "export.txt", format="tsv").corpus()
    assert (doc.id, doc.title, doc.text, doc.metadata) == ("d1", "", "some text", {"score": "0.5"})
    jsonl = write_collection(tmp_path / "c.jsonl", [{"_id": 7, "text": "x", "tags": ["a", "b"], "m": {"k": None}}],
                             "jsonl")
    [doc] = open_collection(jsonl).corpus()
    assert (doc.id, doc.metadata) == ("7", {"tags": ["a", "b"], "m": {"k": None}})
    table = pa.table({"_id": ["a", "b"], "text": ["x", "y"], "w": [float("nan"), 1.5],
                      "day": pa.array([0, 1], pa.date32())})
    pq.write_table(table, tmp_path / "c.parquet")
    docs = list(open_collection(tmp_path / "c.parquet").corpus())
    assert [d.metadata for d in docs] == [{"w": None, "day": "1970-01-01"}, {"w": 1.5, "day": "1970-01-02"}]
    json.dumps([d.metadata for d in docs], allow_nan=False)


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_a_document_longer_than_the_csv_modules_default_field_limit_is_read(fmt, tmp_path):
    long_text = "statute " * 40_000  # 320,000 characters: the csv module's default limit is 131,072
    path = write_collection(tmp_path / f"c.{fmt}", [{"_id": "d1", "text": long_text}], fmt)
    [doc] = open_collection(path).corpus()
    assert doc.text == long_text


def test_parquet_is_read_in_record_batches(tmp_path, monkeypatch):
    import retriever.index.collection as collection

    monkeypatch.setattr(collection, "PARQUET_BATCH", 3)
    records = [{"_id": f"d{i}", "text": f"text {i}"} for i in range(10)] + [{"_id": "d3", "text": "again"}]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "c.parquet", row_group_size=4)
    reader = open_collection(tmp_path / "c.parquet").corpus()
    assert [next(reader).id for _ in range(10)] == [f"d{i}" for i in range(10)]
    with pytest.raises(CollectionError, match=r"row 11: duplicate document id 'd3' \(first at row 4\)"):
        next(reader)


def test_index_dataset_builds_dense_and_bm25_like_the_beir_dataset(data_dir, toy_docs, toy_model_dir, tmp_path):
    path = write_collection(tmp_path / "mine.csv", _records(toy_docs), "csv")
    common = {"model": str(toy_model_dir), "cache_dir": tmp_path / "cache"}
    mine = index_dataset(None, None, corpus=path, output=tmp_path / "idx", **common)
    beir = index_dataset(data_dir, "toy", **common)
    assert mine.dense.path == tmp_path / "idx" and mine.dense.doc_ids == beir.dense.doc_ids
    np.testing.assert_allclose(mine.dense.embeddings, beir.dense.embeddings, atol=1e-6)
    assert mine.lexical.doc_ids == beir.lexical.doc_ids
    query = [toy_docs[3].text]
    for got, want in zip(mine.lexical.search(query, 5), beir.lexical.search(query, 5), strict=True):
        np.testing.assert_allclose(got, want)
    with pytest.raises(ValueError, match=r"--corpus .*mine\.csv needs --output DIR: a collection is indexed into a "
                                         r"named index directory, not the cache"):
        index_dataset(None, None, corpus=path, **common)
    with pytest.raises(ValueError, match=r"give --dataset NAME .* or --corpus FILE .*, not both"):
        index_dataset(data_dir, "toy", corpus=path, output=tmp_path / "idx2", **common)


def test_cli_indexes_a_collection_and_search_returns_its_text(toy_docs, toy_model_dir, tmp_path):
    path = write_collection(tmp_path / "mine.jsonl", _records(toy_docs), "jsonl")
    runner = CliRunner()
    common = ["--model", str(toy_model_dir), "--cache-dir", str(tmp_path / "cache")]
    no_output = runner.invoke(cli.main, ["-q", "index", "--corpus", str(path), *common])
    assert no_output.exit_code == 2 and "needs --output DIR: a collection is indexed into a named index" in \
        no_output.output
    both = runner.invoke(cli.main, ["-q", "index", "--corpus", str(path), "--dataset", "toy", *common])
    assert both.exit_code == 2 and "give --dataset NAME" in both.output and "or --corpus FILE" in both.output \
        and "not both" in both.output
    built = runner.invoke(cli.main, ["-q", "index", "--corpus", str(path), "--output", str(tmp_path / "idx"), *common])
    assert built.exit_code == 0, built.output
    found = runner.invoke(cli.main, ["-q", "search", "--index", str(tmp_path / "idx"), "--model", str(toy_model_dir),
                                     "--query", toy_docs[0].text, "--json", "--top-k", "1"])
    assert found.exit_code == 0, found.output
    [hit] = json.loads(found.output)["hits"]
    assert hit["text"] == {d.id: d.text for d in toy_docs}[hit["doc_id"]] and hit["metadata"]["lang"] == "en"


def test_cli_reports_a_bad_row_in_one_line_and_writes_nothing(toy_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', encoding="utf-8")
    out = tmp_path / "idx"
    result = CliRunner().invoke(cli.main, ["-q", "index", "--corpus", str(bad), "--output", str(out), "--model",
                                           str(toy_model_dir), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: {bad}:2: duplicate document id 'a' (first at line 1)\n"
    assert not out.exists() and not (tmp_path / "idx-bm25").exists()


def test_cli_format_and_fields_for_index_and_add(toy_model_dir, tmp_path):
    """``--format`` reads a file whose name says nothing; the field options name the columns; ``add`` takes both."""
    first = tmp_path / "first.txt"
    first.write_text("key\tbody\tsource\na\talpha beta gamma\twiki\nb\tdelta epsilon\tnews\n", encoding="utf-8")
    more = tmp_path / "more.dat"
    more.write_text(json.dumps({"key": "c", "body": "zeta eta theta", "source": "blog"}) + "\n", encoding="utf-8")
    fields = ["--id-field", "key", "--text-field", "body"]
    runner, out = CliRunner(), tmp_path / "idx"
    unnamed = runner.invoke(cli.main, ["-q", "index", "--corpus", str(first), "--output", str(out), *fields])
    assert unnamed.exit_code == 1 and "cannot tell the format from the name" in unnamed.output and not out.exists()
    built = runner.invoke(cli.main, ["-q", "index", "--corpus", str(first), "--format", "tsv", "--output", str(out),
                                     "--model", str(toy_model_dir), *fields])
    assert built.exit_code == 0, built.output
    added = runner.invoke(cli.main, ["-q", "add", "--index", str(out), "--corpus", str(more), "--format", "jsonl",
                                     *fields])
    assert added.exit_code == 0, added.output
    found = runner.invoke(cli.main, ["-q", "search", "--index", str(out), "--model", str(toy_model_dir), "--query",
                                     "zeta eta theta", "--json", "--top-k", "3"])
    assert found.exit_code == 0, found.output
    hits = {hit["doc_id"]: hit for hit in json.loads(found.output)["hits"]}
    assert set(hits) == {"a", "b", "c"}
    assert (hits["c"]["text"], hits["c"]["metadata"], hits["a"]["metadata"]) == ("zeta eta theta",
                                                                                  {"source": "blog"},
                                                                                  {"source": "wiki"})


def test_an_indexed_collection_teaches_an_expert_and_routers_without_judgments(toy_docs, data_dir, toy_model_dir,
                                                                               tmp_path, monkeypatch):
    """Issue #27 for your own documents: ``train-expert --unlabelled --index DIR`` draws pseudo-queries from the
    documents a named index holds, ``build-router --unlabelled-index DIR`` fits routers on them, recording the index
    so that adding an expert refits from it again; ``search`` then routes over it. Bad input: one line each."""
    from conftest import write_toy_dataset

    from experts.workflows import unlabelled

    monkeypatch.setattr(unlabelled, "SELF_CHECK_MARGIN", -1.0)
    write_toy_dataset(data_dir, "other")
    collection = write_collection(tmp_path / "mine.jsonl", _records(toy_docs), "jsonl")
    router, model = tmp_path / "router", ["--model", str(toy_model_dir), "--cache-dir", str(tmp_path / "cache")]

    def run(*args):
        return CliRunner().invoke(cli.main, ["-q", *args[:1], "--data-dir", str(data_dir), *args[1:]],
                                  catch_exceptions=False)

    assert run("index", "--corpus", str(collection), "--output", str(tmp_path / "mine"), *model).exit_code == 0
    train = ("train-expert", "--router", str(router), *model, "--config", '{"max_steps": 2}')
    result = run(*train, "--name", "x", "--index", str(tmp_path / "mine"))
    assert result.exit_code == 2 and "--index only go with --unlabelled" in result.output, result.output
    result = run(*train, "--name", "x", "--unlabelled", "--index", str(tmp_path / "mine"), "--dataset", "toy")
    assert result.exit_code == 2 and "or --index DIR" in result.output and "not both" in result.output
    result = run(*train, "--name", "x", "--unlabelled", "--index", str(tmp_path / "nowhere"))
    assert result.exit_code == 1 and str(tmp_path / "nowhere") in result.output, result.output
    assert not router.exists()  # failed before anything was written
    result = run(*train, "--name", "mine-free", "--unlabelled", "--index", str(tmp_path / "mine"), "--pseudo-queries",
                 "12")
    assert result.exit_code == 0, result.output
    record = json.loads((router / "experts" / "mine-free" / "expert.json").read_text())
    mine = {"backend": "faiss", "target": str(tmp_path / "mine")}
    assert record["unlabelled"]["index"] == mine
    assert record["unlabelled"]["pseudo_queries"] == 10  # of 20 documents, the self-check keeps the other half

    build = ("build-router", "--router", str(router), *model, "--max-queries", "8", "--dataset", "other")
    result = run(*build, "--unlabelled-index", str(tmp_path / "mine"), "--unlabelled-index", f"{tmp_path}/./mine/",
                 "--json")  # one index, spelt twice
    assert result.exit_code == 0, result.output
    assert {"auto:mine-free", "hybrid:mine-free"} <= set(json.loads(result.stdout)["routers"][0]["systems"])
    info = json.loads((router / "routers" / "pilot" / "routing.json").read_text())["info"]
    assert info["datasets"] == ["other", "mine"] and info["unlabelled"] == ["mine"]
    assert info["indexes"] == {"mine": mine}
    (data_dir / "toy").rename(tmp_path / "toy-moved")  # the collection's source is no longer a dataset anywhere
    added = run("train-expert", "--dataset", "other", "--name", "other-expert", "--router", str(router), *model,
                "--config", '{"max_steps": 2}')
    assert added.exit_code == 0 and "refitted routers: pilot" in added.output, added.output
    refitted = json.loads((router / "routers" / "pilot" / "routing.json").read_text())["info"]
    assert "auto:other-expert" in refitted["label_counts"] and refitted["indexes"] == info["indexes"]
    found = CliRunner().invoke(cli.main, ["-q", "search", "--index", str(tmp_path / "mine"), "--router", str(router),
                                          "--model", str(toy_model_dir), "--query", toy_docs[0].text, "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)["hits"][0]["doc_id"] == toy_docs[0].id

    same_name = tmp_path / "twin" / "other"
    assert run("index", "--corpus", str(collection), "--output", str(same_name), *model).exit_code == 0
    result = run(*build, "--unlabelled-index", str(same_name))
    assert result.exit_code == 1 and "is named 'other', as is dataset 'other'" in result.output, result.output
    result = run("build-router", "--router", str(router), *model, "--max-queries", "8", "--kind", "dataset",
                 "--unlabelled-index", str(same_name))  # the pilot already built knows 'other' as a dataset
    assert result.exit_code == 1 and "'other' names dataset 'other' in the routers already built" in result.output
    assert not (router / "routers" / "dataset").exists()
    (tmp_path / "mine").rename(tmp_path / "gone")
    result = run("train-expert", "--dataset", "other", "--name", "late", "--router", str(router), *model)
    assert result.exit_code == 1 and f"were built on index {tmp_path / 'mine'}" in result.output, result.output
    milvus = ("--backend", "milvus", "--uri", str(tmp_path / "m.db"))
    (tmp_path / "gone").rename(tmp_path / "mine")
    result = run("train-expert", "--dataset", "other", "--name", "late", "--router", str(router), *model, *milvus)
    assert result.exit_code == 1 and "give the --backend (and --uri) it was indexed with" in result.output
    assert not (router / "experts" / "late").exists()
