import gzip
import json
import logging

import pytest
from conftest import write_toy_dataset

from eval.data import DataError, iter_corpus, load_qrels, load_queries, open_dataset, resolve_data_dir


def test_loads_gzipped_dataset(data_dir):
    ds = open_dataset(data_dir, "toy")
    docs = list(ds.corpus())
    assert len(docs) == 20
    assert docs[0].id == "solar-1"
    assert docs[0].content() == "Solar panels Photovoltaic cells convert sunlight into electricity for homes."
    assert docs[1].content().startswith("More about solar panels")  # empty title: no leading space
    assert ds.splits == ["test", "train"]
    split = ds.split("test")
    assert set(split.queries) == {"q-volcano", "q-insulin", "q-jazz", "q-rust", "q-tides", "q-coffee"}
    assert split.qrels["q-jazz"] == {"jazz-1": 2, "jazz-2": 1}  # graded scores kept


def test_plain_corpus_and_crlf_qrels(tmp_path):
    write_toy_dataset(tmp_path, gz=False, crlf=True)
    ds = open_dataset(tmp_path, "toy")
    assert ds.corpus_path.name == "corpus.jsonl"
    qrels = ds.qrels("train")
    assert qrels["q-solar"] == {"solar-1": 2, "solar-2": 1}
    assert all("\r" not in doc for judged in qrels.values() for doc in judged)


def test_missing_dataset_names_where_it_looked(data_dir):
    with pytest.raises(DataError, match=r"dataset 'nope' not found: looked for .*beir/nope; available in .*: toy"):
        open_dataset(data_dir, "nope")


def test_missing_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("ROUTERRETRIEVER_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="no data directory: pass --data-dir or set ROUTERRETRIEVER_DATA_DIR"):
        resolve_data_dir(None)
    with pytest.raises(DataError, match="data directory '.*missing' does not exist"):
        resolve_data_dir(tmp_path / "missing")
    monkeypatch.setenv("ROUTERRETRIEVER_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path


@pytest.mark.parametrize("name", ["corpus.jsonl.gz", "queries.jsonl"])
def test_missing_file(data_dir, name):
    (data_dir / "toy" / name).unlink()
    with pytest.raises(DataError, match=f"dataset 'toy': missing {name.split('.')[0]} file"):
        open_dataset(data_dir, "toy")


def test_missing_qrels(data_dir):
    for path in (data_dir / "toy" / "qrels").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="dataset 'toy': no qrels files in .*qrels"):
        open_dataset(data_dir, "toy")


def test_unknown_split_lists_available(data_dir):
    ds = open_dataset(data_dir, "toy")
    with pytest.raises(DataError, match="unknown split 'dev' for dataset 'toy'; available: test, train"):
        ds.split("dev")


def _write_corpus(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    _write_corpus(path, [json.dumps({"_id": "a", "text": "x"}), '{"_id": "b", "text": '])
    with pytest.raises(DataError, match=r"corpus\.jsonl\.gz:2: malformed JSON"):
        list(iter_corpus(path))


@pytest.mark.parametrize("record, key", [({"text": "x"}, "_id"), ({"_id": "a"}, "text"),
                                         ({"_id": "", "text": "x"}, "_id"), ({"_id": 7, "text": "x"}, "_id")])
def test_missing_id_or_text(tmp_path, record, key):
    path = tmp_path / "corpus.jsonl.gz"
    _write_corpus(path, [json.dumps({"_id": "ok", "text": "fine"}), json.dumps(record)])
    with pytest.raises(DataError, match=rf"corpus\.jsonl\.gz:2: missing or non-string '{key}'"):
        list(iter_corpus(path))


def test_duplicate_document_id(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    _write_corpus(path, [json.dumps({"_id": "a", "text": "x"}), json.dumps({"_id": "a", "text": "y"})])
    with pytest.raises(DataError, match=r":2: duplicate document id 'a'"):
        list(iter_corpus(path))


def test_duplicate_query_id(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"_id": "q", "text": "x"}) + "\n" + json.dumps({"_id": "q", "text": "y"}) + "\n")
    with pytest.raises(DataError, match=r"queries\.jsonl:2: duplicate query id 'q'"):
        load_queries(path)


def test_empty_corpus(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    _write_corpus(path, [""])
    with pytest.raises(DataError, match=r"corpus\.jsonl\.gz: empty corpus"):
        list(iter_corpus(path))


def test_bad_qrels_rows(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: score must be an integer in \[-2147483648, 2147483647\], "
                                         r"got 'high'"):
        load_qrels(path)
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(DataError, match=r"test\.tsv:2: expected 3 tab-separated columns, got 2"):
        load_qrels(path)


def test_unknown_ids_dropped_with_one_warning(data_dir, caplog):
    qrels = data_dir / "toy" / "qrels" / "test.tsv"
    with open(qrels, "a") as handle:
        handle.write("q-jazz\tno-such-doc\t1\nno-such-query\tjazz-1\t1\nno-such-query\tjazz-2\t1\n")
    ds = open_dataset(data_dir, "toy")
    with caplog.at_level(logging.WARNING, logger="eval.data"):
        split = ds.split("test")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "dropped 3 judgment(s)" in warnings[0].getMessage()
    assert split.qrels["q-jazz"] == {"jazz-1": 2, "jazz-2": 1}
    assert "no-such-query" not in split.queries
