"""Integration on real data from ../shared/data/beir: the CLI against a plain sentence-transformers + FAISS run,
and the expected-score file. Marked ``realdata``; skipped with a reason when the data is absent."""

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

import cli
from eval.data import open_dataset
from eval.metrics import evaluate

pytestmark = pytest.mark.realdata

EXPECTED = json.loads((Path(__file__).resolve().parent.parent / "eval" / "expected_scores.json").read_text())


def _expected(dataset, system="base"):
    entry = EXPECTED["scores"][system][dataset]
    return entry["ndcg@10"], entry.get("tolerance", EXPECTED["tolerance"])


def test_cli_evaluate_matches_plain_sentence_transformers_and_faiss(real_data_dir, minilm, tmp_path):
    name = "aila2019-statutes"
    out = tmp_path / "results.json"
    result = CliRunner().invoke(cli.main, [
        "-q", "evaluate", "--data-dir", str(real_data_dir), "--dataset", name, "--system", "base",
        "--cache-dir", str(tmp_path / "cache"), "--output-json", str(out),
    ])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["results"][0]
    assert row["queries"] == 40

    # The same run, written the plain way: SentenceTransformer.encode + faiss.IndexFlatIP + BEIR.
    dataset = open_dataset(real_data_dir, name)
    docs = list(dataset.corpus())
    model = minilm.model
    doc_vectors = model.encode([f"{d.title} {d.text}".strip() for d in docs], normalize_embeddings=True)
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(np.asarray(doc_vectors, dtype=np.float32))
    split = dataset.split("test")
    qids = list(split.queries)
    scores, rows = index.search(model.encode([split.queries[q] for q in qids], normalize_embeddings=True), 100)
    plain = {q: {docs[r].id: float(s) for s, r in zip(srow, rrow, strict=True)}
             for q, srow, rrow in zip(qids, scores, rows, strict=True)}
    reference = evaluate(split.qrels, plain)
    assert row["ndcg@10"] == pytest.approx(reference.ndcg_at_10, abs=1e-4)
    assert row["recall@100"] == pytest.approx(reference.recall_at_100, abs=1e-4)

    expected, tolerance = _expected(name)
    assert row["ndcg@10"] == pytest.approx(expected, abs=tolerance)


def test_readme_snippet_runs(real_data_dir, tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROUTERRETRIEVER_DATA_DIR", str(real_data_dir))
    exec(compile(snippet, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    assert all(line.split()[1].startswith("S") for line in lines)  # statute ids
    assert (tmp_path / "aila-index" / "index.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED["scores"]["base"]))
def test_expected_base_scores(real_data_dir, minilm, name, tmp_path_factory):
    """All eight datasets (about 25 minutes on 2 cores when no index is cached): run with -m slow."""
    import os

    from eval.runs import SplitRun
    from retriever.encoding.expert_encoder import MultiExpertEncoder
    from retriever.index.faiss_index import ensure_index

    cache = os.environ.get("ROUTERRETRIEVER_CACHE_DIR") or tmp_path_factory.getbasetemp() / "cache"
    dataset = open_dataset(real_data_dir, name)
    result = SplitRun(dataset, "test", MultiExpertEncoder(minilm), ensure_index(dataset, minilm, cache)).run("base")
    expected, tolerance = _expected(name)
    assert result.scores.ndcg_at_10 == pytest.approx(expected, abs=tolerance)


@pytest.mark.slow
def test_expected_demo_scores(real_data_dir):
    """The demo selection end to end (``make demo``'s pipeline): about 10 minutes on 2 cores from nothing, seconds
    when ``make demo`` already ran with the same cache directory (its router directory is reused)."""
    import os

    from experts.workflows import DEFAULT_OVERRIDES, load_overrides, run_comparison
    from retriever.storage.cache import default_cache_dir

    demo = EXPECTED["demo"]
    if not os.environ.get("ROUTERRETRIEVER_CACHE_DIR"):  # never train into the user's own cache by surprise
        pytest.skip("set ROUTERRETRIEVER_CACHE_DIR (make test-slow sets .cache/, reusing make demo's work)")
    cache = Path(default_cache_dir())
    comparison = run_comparison(real_data_dir, cache / "demo" / "router", cache, demo["expert_datasets"],
                                demo["eval_datasets"], overrides=load_overrides(DEFAULT_OVERRIDES), multitask=False)
    measured = {(r.system, r.dataset): r.scores.ndcg_at_10 for r in comparison.results}
    expected = {(system, dataset): entry["ndcg@10"] for system, rows in demo["scores"].items()
                for dataset, entry in rows.items()}
    assert set(measured) == set(expected) and comparison.default == demo["default_system"]
    off = {key: (measured[key], value) for key, value in expected.items()
           if abs(measured[key] - value) > demo["tolerance"]}
    assert not off, off
