"""Corpus encoding on Ray (``retriever.index.ray_encoder``) on a real local Ray cluster with 2 CPUs: the vectors equal
the local encoder's (1e-5), in corpus order, into either backend, and through ``routerretriever index``."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from eval.data import open_dataset
from retriever.index.faiss_index import build_index
from retriever.index.milvus import build_milvus_index

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (2 CPUs, as CI has); every RayEncoder below joins it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def ray_encoder(cluster, toy_model_dir):
    """Two actors holding the cluster's 2 CPUs until the test ends (so a test that needs them waits for none)."""
    from retriever.index.ray_encoder import RayEncoder

    encoder = RayEncoder(str(toy_model_dir), workers=2, block_size=3)
    yield encoder
    encoder.close()
    assert ray.is_initialized()  # joined, not started: the module's cluster stays up


def test_vectors_equal_the_local_encoder_in_order(ray_encoder, toy_encoder, data_dir):
    texts = [d.content() for d in open_dataset(data_dir, "toy").corpus()]
    done = []
    vectors = ray_encoder.encode(texts, progress=done.append)
    assert ray_encoder.info == toy_encoder.info and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, toy_encoder.encode(texts), atol=1e-5)
    assert sum(done) == len(texts) and len(done) == 7  # blocks of 3, reported as they finish
    assert ray_encoder.encode([]).shape == (0, toy_encoder.dim)


def test_both_backends_take_ray_vectors(ray_encoder, toy_encoder, data_dir, tmp_path):
    toy = open_dataset(data_dir, "toy")
    local = build_index(toy, toy_encoder, tmp_path / "local")
    on_ray = build_index(toy, ray_encoder, tmp_path / "ray")
    np.testing.assert_allclose(on_ray.embeddings, local.embeddings, atol=1e-5)
    from retriever.index.lexical import LexicalConfig

    # Milvus: the workers insert their blocks themselves (into this Milvus Lite file through its server's port)
    milvus = build_milvus_index(toy, ray_encoder, str(tmp_path / "m.db"), "toy_ray", lexical=LexicalConfig())
    np.testing.assert_allclose(milvus.embeddings, local.embeddings, atol=1e-5)
    assert milvus.doc_ids == local.doc_ids and len(milvus) == 20
    assert milvus.documents(local.doc_ids) == local.documents(local.doc_ids)  # the workers store the text too
    from retriever.ranking.topk import search_lexical

    alone = build_milvus_index(toy, toy_encoder, str(tmp_path / "m.db"), "toy_local", lexical=LexicalConfig())
    query = ["blue whale largest animal"]
    assert search_lexical(milvus.lexical(), query, ["q"], 5) == search_lexical(alone.lexical(), query, ["q"], 5)


def test_bad_worker_count(cluster):
    from retriever.index.ray_encoder import RayEncoder

    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        RayEncoder(workers=0)


@pytest.mark.realdata
def test_cli_index_on_ray_equals_local(cluster, real_data_dir, tmp_path):
    """The acceptance check on a small real corpus: ``index --encoder ray --workers 2`` writes the local path's
    vectors (1e-5) and ids."""
    runner = CliRunner()
    common = ["-q", "index", "--data-dir", str(real_data_dir), "--dataset", "aila2019-statutes", "--no-lexical"]
    for name, extra in (("local", []), ("ray", ["--encoder", "ray", "--workers", "2"])):
        result = runner.invoke(cli.main, [*common, *extra, "--output", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    vectors = [np.load(tmp_path / n / "embeddings.npy") for n in ("local", "ray")]
    assert vectors[0].shape == (197, 384)
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-5)
    ids = [json.loads((tmp_path / n / "doc_ids.json").read_text()) for n in ("local", "ray")]
    assert ids[0] == ids[1]
    wrong = runner.invoke(cli.main, [*common, "--ray-address", "auto", "--output", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "are for --encoder ray" in wrong.output


def test_workers_that_cannot_load_the_model_fail_in_one_line_and_free_the_cluster(cluster, toy_model_dir, tmp_path):
    import shutil

    from retriever.index.ray_encoder import RayEncoder

    bad = shutil.copytree(toy_model_dir, tmp_path / "bad")  # found here, so only the workers' load fails
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"Ray workers could not load model '{bad}': .*{weights} is not a ") as err:
        RayEncoder(str(bad), workers=2)
    assert "\n" not in str(err.value)
    encoder = RayEncoder(str(toy_model_dir), workers=2)  # the failed workers gave their CPUs back
    encoder.close()
