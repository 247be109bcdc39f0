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
                                       ("c.tsv.gz", "tsv"), ("c.parquet", "parquet")])
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
])
def test_malformed_rows_are_one_line_naming_file_and_row(fmt, rows, message, tmp_path, toy_encoder):
    collection = open_collection(write_collection(tmp_path / f"c.{fmt}", rows, fmt))
    with pytest.raises(CollectionError, match=message) as caught:
        build_index(collection, toy_encoder, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_malformed_json_and_unknown_format(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(CollectionError, match=r"c\.jsonl:2: malformed JSON"):
        list(open_collection(bad).corpus())
    (tmp_path / "c.xml").write_text("<docs/>")
    with pytest.raises(CollectionError, match="cannot tell the format"):
        open_collection(tmp_path / "c.xml")
    with pytest.raises(CollectionError, match="no collection file"):
        open_collection(tmp_path / "absent.jsonl")


def test_cli_indexes_a_collection_and_search_returns_its_text(toy_docs, toy_model_dir, tmp_path):
    path = write_collection(tmp_path / "mine.jsonl", _records(toy_docs), "jsonl")
    runner = CliRunner()
    common = ["--model", str(toy_model_dir), "--cache-dir", str(tmp_path / "cache")]
    no_output = runner.invoke(cli.main, ["-q", "index", "--corpus", str(path), *common])
    assert no_output.exit_code != 0 and "needs --output DIR" in no_output.output
    both = runner.invoke(cli.main, ["-q", "index", "--corpus", str(path), "--dataset", "toy", *common])
    assert both.exit_code != 0 and "not both" in both.output
    built = runner.invoke(cli.main, ["-q", "index", "--corpus", str(path), "--output", str(tmp_path / "idx"), *common])
    assert built.exit_code == 0, built.output
    found = runner.invoke(cli.main, ["-q", "search", "--index", str(tmp_path / "idx"), "--model", str(toy_model_dir),
                                     "--query", toy_docs[0].text, "--json", "--top-k", "1"])
    assert found.exit_code == 0, found.output
    [hit] = json.loads(found.output)["hits"]
    assert hit["text"] == {d.id: d.text for d in toy_docs}[hit["doc_id"]] and hit["metadata"]["lang"] == "en"
