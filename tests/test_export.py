"""Exports as sentence-transformers models (``experts.export``, ``retriever.adapters.st_model``): an expert as a
query/document model, and the routed model (router + experts) as one model whose ``encode_query`` gives
``RouterRetriever``'s routed vectors and ``encode_document`` the base's (1e-5, real sentence-transformers loading);
damaged, incomplete and tampered directories refused with the file named; the ``export`` command."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TOPICS
from sentence_transformers import SentenceTransformer

import cli
from experts.export import export_expert, export_routed
from retriever import RouterRetriever
from retriever.adapters import RoutedEncoder, load_routed_model, verify_export
from retriever.encoding.lora import RoutedLoRALinear
from retriever.routers import fit_router
from retriever.routers.base import RoutingData, RoutingSpace
from retriever.routers.directory import RouterDirectory
from retriever.storage.files import ArtifactError, read_json, sha256_file, write_json

FOLDER = "query_0_RoutedEncoder"  # where sentence-transformers' Router saves the routed module
TRAIN = [phrase.format(title=title.lower(), key=key, text=text) for key, title, text in TOPICS
         for phrase in ("what is known about {title}", "{text}", "tell me about {key}")]
QUERIES = [phrase.format(title=title.lower(), key=key, text=text) for key, title, text in TOPICS
           for phrase in ("{title} facts", "a question on {key}, {title} and how {text}")] + ["a", "zebra"] + TRAIN
DOCUMENTS = [text for _, _, text in TOPICS] + ["An unrelated sentence about nothing in particular."]


@pytest.fixture(scope="module")
def mixed(lexical_world, tmp_path_factory):
    """Two copies of the lexical world's router directory, each with a ``classifier`` router that sends the queries
    to every kind of system (labels cycling over the systems): one on base embeddings, one on the shared prefix
    (layer 1, where ``encode_routed`` leaves bm25 rows zero)."""
    encoder = lexical_world["encoder"]
    systems = list(lexical_world["store"].load_router("pilot").systems)
    labels = [systems[i % len(systems)] for i in range(len(TRAIN))]
    datasets = ["toy" if i % 2 else "other" for i in range(len(TRAIN))]
    prefix = RoutingSpace.fitted(1, encoder.prefix_means(TRAIN, 1))
    built = {}
    for name, vectors, space in (("embeddings", encoder.encode(TRAIN), RoutingSpace()),
                                 ("prefix", prefix.vectors(encoder.prefix_means(TRAIN, 1)), prefix)):
        root = shutil.copytree(lexical_world["root"] / "router", tmp_path_factory.mktemp(name) / "router")
        data = RoutingData(vectors, labels, datasets, {"toy": "toy-expert", "other": "other-expert"}, systems,
                           space=space)
        RouterDirectory(root, encoder.info).save_router(fit_router("classifier", data, c=1e4),
                                                        {"datasets": ["toy", "other"], "max_queries": len(TRAIN)})
        built[name] = root
    return {**built, "systems": systems, "encoder": encoder}


def routed_reference(router: Path, kind: str, model_dir, texts=QUERIES) -> tuple[np.ndarray, list[str]]:
    """``RouterRetriever``'s routed vectors of ``texts`` and their systems, bm25 rows with the base vector (what
    the export documents for a system without a dense vector)."""
    rr = RouterRetriever.load(router, kind, model=None if model_dir is None else str(model_dir))
    vectors, choice, _, _ = rr.encode_routed(texts)
    lexical = [i for i, system in enumerate(choice) if system == "bm25"]
    vectors[lexical] = rr.encoder.encode([texts[i] for i in lexical], "base")
    return vectors, choice


def test_expert_export_is_a_query_document_model(lexical_world, toy_encoder, tmp_path):
    store, encoder = lexical_world["store"], lexical_world["encoder"]
    out = export_expert(store, "toy-expert", toy_encoder, tmp_path / "expert")
    model = SentenceTransformer(str(out), device="cpu")  # plain sentence-transformers modules: no flag, no code
    np.testing.assert_allclose(model.encode_query(QUERIES), encoder.encode(QUERIES, "toy-expert"), atol=1e-5)
    documents = model.encode_document(DOCUMENTS)
    np.testing.assert_allclose(documents, toy_encoder.encode(DOCUMENTS), atol=1e-5)
    assert not np.allclose(documents, encoder.encode(DOCUMENTS, "toy-expert"), atol=1e-3)  # what it used to give
    with pytest.raises(ValueError, match="Could not determine route for task=None"):
        model.encode(QUERIES)  # a query or a document, never a guess
    types = [m["type"] for m in read_json(out / "modules.json")] + list(read_json(out / "router_config.json")["types"]
                                                                       .values())
    assert all(t.startswith("sentence_transformers.") for t in types), types
    meta = read_json(out / "routerretriever-export.json")
    assert (meta["format_version"], meta["expert"], meta["query"], meta["document"]) == (2, "toy-expert",
                                                                                        "toy-expert", "base")
    assert "`toy-expert`" in (out / "README.md").read_text()
    # reloading, and saving the loaded model again, give the same vectors
    again = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_array_equal(again.encode_query(QUERIES), model.encode_query(QUERIES))
    model.save(str(tmp_path / "resaved"))
    resaved = SentenceTransformer(str(tmp_path / "resaved"), device="cpu")
    np.testing.assert_allclose(resaved.encode_query(QUERIES), model.encode_query(QUERIES), atol=1e-6)
    np.testing.assert_allclose(resaved.encode_document(DOCUMENTS), documents, atol=1e-6)


@pytest.mark.parametrize("space", ["embeddings", "prefix"])
def test_routed_export_gives_router_retrievers_vectors(mixed, toy_encoder, toy_model_dir, tmp_path, space):
    out = export_routed(mixed[space], tmp_path / space, routing="classifier", model=toy_model_dir)
    want, choice = routed_reference(mixed[space], "classifier", toy_model_dir)
    assert set(choice) == set(mixed["systems"]), choice  # every kind of system, in mixed batches
    model = load_routed_model(out, device="cpu")
    np.testing.assert_allclose(model.encode_query(QUERIES, batch_size=7), want, atol=1e-5)
    np.testing.assert_allclose(model.encode_query(QUERIES[5:6]), want[5:6], atol=1e-5)  # one at a time
    np.testing.assert_allclose(model.encode_document(DOCUMENTS), toy_encoder.encode(DOCUMENTS), atol=1e-5)
    module = model[0].sub_modules["query"][0]
    assert isinstance(module, RoutedEncoder) and module is model[0].sub_modules["document"][0]  # one base copy
    assert module.encode_queries(QUERIES)[1] == choice
    plain = SentenceTransformer(str(out), device="cpu", trust_remote_code=True)
    np.testing.assert_allclose(plain.encode_query(QUERIES), want, atol=1e-5)
    with pytest.raises(ValueError, match="Could not determine route for task=None"):
        plain.encode(QUERIES)
    meta = read_json(out / "routerretriever-export.json")
    assert (meta["router"], meta["experts"], meta["systems"]) == ("classifier", ["other-expert", "toy-expert"],
                                                                   mixed["systems"])
    card = (out / "README.md").read_text()
    assert "router `classifier`" in card and toy_encoder.info.fingerprint in card and "`toy-expert`" in card
    assert ("entering layer 1" in card) == (space == "prefix")


def test_prefix_router_bm25_queries_get_the_base_vector(mixed, toy_model_dir, tmp_path):
    """On a prefix space ``encode_routed`` gives bm25 queries no vector (zeros); the export gives the base's."""
    rr = RouterRetriever.load(mixed["prefix"], "classifier", model=str(toy_model_dir))
    vectors, choice, _, _ = rr.encode_routed(QUERIES)
    rows = [i for i, system in enumerate(choice) if system == "bm25"]
    assert rows and not vectors[rows].any()
    module = RoutedEncoder.from_router(mixed["prefix"], "classifier", toy_model_dir)
    got, _ = module.encode_queries(QUERIES)
    np.testing.assert_allclose(got[rows], rr.encoder.encode([QUERIES[i] for i in rows], "base"), atol=1e-5)


def test_lora_factors_follow_the_model(lexical_world):
    """``.to()`` reaches the experts' factors (not parameters), as it reaches the layer's weights: a model loaded on
    the CPU and moved to its device (what sentence-transformers does after loading) keeps its experts working."""
    layer = next(m for m in lexical_world["encoder"].base.model.modules() if isinstance(m, RoutedLoRALinear))
    assert set(layer.adapters) == {"other-expert", "toy-expert"}
    moved = copy.deepcopy(layer).to("meta")  # a device this machine has without a GPU
    assert moved.base.weight.is_meta and all(t.is_meta for pair in moved.adapters.values() for t in pair)
    assert not any(t.is_meta for pair in layer.adapters.values() for t in pair)  # the original stays put
    doubled = copy.deepcopy(layer).double()
    assert {t.dtype for pair in doubled.adapters.values() for t in pair} == {torch.float64}


@pytest.fixture(scope="module")
def exported(mixed, toy_model_dir, tmp_path_factory):
    return export_routed(mixed["embeddings"], tmp_path_factory.mktemp("exported") / "model", routing="classifier",
                         model=toy_model_dir)


@pytest.mark.parametrize("change, message", [
    (lambda d: (d / FOLDER / "router/experts/toy-expert/adapter_model.safetensors").write_bytes(b"0" * 64),
     "adapter_model.safetensors was changed after export"),
    (lambda d: shutil.rmtree(d / FOLDER / "router/experts/other-expert"),
     "other-expert/adapter_config.json is missing: the exported model in .* is incomplete"),
    (lambda d: (d / FOLDER / "router/routers/classifier/routing.json").write_text("{}"),
     "routing.json was changed after export"),
    (lambda d: (d / "README.md").write_text("edited"), "README.md was changed after export"),
    (lambda d: (d / FOLDER / "base/evil.py").write_text("print('hi')"), "base/evil.py was added after export"),
    (lambda d: (d / "routerretriever-export.json").unlink(), "has no routerretriever-export.json"),
    (lambda d: (d / "routerretriever-export.json").write_text("[1]"), "must be a JSON object"),
])
def test_a_changed_export_is_refused_on_load(exported, tmp_path, change, message):
    model = shutil.copytree(exported, tmp_path / "model")
    change(model)
    with pytest.raises(ArtifactError, match=message):
        SentenceTransformer(str(model), device="cpu", trust_remote_code=True)
    with pytest.raises(ArtifactError, match=message):
        load_routed_model(model)


def test_load_routed_model_imports_no_other_class(exported, tmp_path):
    """A directory whose modules.json names another class (checksums recomputed: crafted, not damaged) is refused
    before sentence-transformers imports anything."""
    model = shutil.copytree(exported, tmp_path / "model")
    modules = read_json(model / "modules.json")
    modules[0]["type"] = "evil.Module"
    write_json(model / "modules.json", modules)
    meta = read_json(model / "routerretriever-export.json")
    meta["files"]["modules.json"] = sha256_file(model / "modules.json")
    write_json(model / "routerretriever-export.json", meta)
    verify_export(model)
    with pytest.raises(ArtifactError, match="names module class 'evil.Module'"):
        load_routed_model(model)


def test_a_model_saved_by_sentence_transformers_alone_is_refused(exported, tmp_path):
    """``model.save`` writes the module's files but not the export's checksums: export again instead."""
    load_routed_model(exported, device="cpu").save(str(tmp_path / "resaved"))
    assert (tmp_path / "resaved" / FOLDER / "router" / "experts" / "toy-expert" / "expert.json").is_file()
    with pytest.raises(ArtifactError, match="has no routerretriever-export.json: not a model `routerretriever "
                                            "export` wrote"):
        SentenceTransformer(str(tmp_path / "resaved"), device="cpu", trust_remote_code=True)


def test_readme_loading_snippet_runs(exported, toy_encoder):
    """README's five lines load the routed model and encode both sides (on the toy export)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Exported models", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(snippet.strip().splitlines()) <= 5 and '"my-routed-st"' in snippet
    scope = {}
    exec(compile(snippet.replace('"my-routed-st"', repr(str(exported))), "README.md", "exec"), scope)
    assert scope["queries"].shape == (1, toy_encoder.dim)
    np.testing.assert_allclose(scope["documents"], toy_encoder.encode(["Vitamin D and calcium supplements ..."]),
                               atol=1e-5)


def nothing_written(output: Path) -> bool:
    """Neither the output nor a temporary sibling of it exists."""
    return not output.exists() and not list(output.parent.glob(f".{output.name}.*"))


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "router.json").write_text("{not json"), r"router.json is not valid JSON"),
    (lambda r: (r / "routers/classifier/routing.json").write_text('{"kind": 1}'), "classifier/routing.json"),
    (lambda r: shutil.rmtree(r / "experts/toy-expert"), "unknown expert 'toy-expert'; available: other-expert"),
    (lambda r: (r / "experts/other-expert/adapter_model.safetensors").write_bytes(b"x"),
     "checksum mismatch for .*other-expert/adapter_model.safetensors"),
])
def test_a_damaged_router_directory_writes_nothing(mixed, toy_model_dir, tmp_path, damage, message):
    router = shutil.copytree(mixed["embeddings"], tmp_path / "router")
    damage(router)
    output = tmp_path / "out" / "model"
    with pytest.raises(ValueError, match=f"cannot export router 'classifier' of {router}: .*{message}"):
        export_routed(router, output, routing="classifier", model=toy_model_dir)
    assert nothing_written(output)
    result = CliRunner().invoke(cli.main, ["-q", "export", "--router", str(router), "--output", str(output),
                                           "--routing", "classifier", "--model", str(toy_model_dir)])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("Error: cannot export router 'classifier'") and nothing_written(output)


def test_export_command(mixed, toy_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "routed"
    args = ["-q", "export", "--router", str(mixed["embeddings"]), "--output", str(out), "--model", str(toy_model_dir)]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    default = RouterDirectory(mixed["embeddings"], mixed["encoder"].info).default_router()
    assert read_json(out / "routerretriever-export.json")["router"] == default
    again = runner.invoke(cli.main, args)
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    assert runner.invoke(cli.main, [*args, "--overwrite"]).exit_code == 0
    verify_export(out)
    for routing, error in (("a/b", "invalid router name 'a/b'"), ("fixed", "router 'fixed' is not built")):
        result = runner.invoke(cli.main, [*args[:-4], "--output", str(tmp_path / "x"), "--routing", routing,
                                          *args[-2:]])
        assert result.exit_code == 1 and error in result.output, result.output
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    result = runner.invoke(cli.main, [*args[:5], str(notes), *args[6:], "--overwrite"])
    assert result.exit_code == 1 and "is not a routerretriever-routed-export" in result.output
    assert (notes / "todo.txt").read_text() == "mine"


def test_experts_export_command_writes_a_query_document_model(lexical_world, toy_model_dir, tmp_path):
    out = tmp_path / "expert"
    result = CliRunner().invoke(cli.main, ["-q", "experts", "export", "--router", str(lexical_world["root"] / "router"),
                                           "other-expert", "--output", str(out), "--model", str(toy_model_dir)])
    assert result.exit_code == 0, result.output
    model = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(model.encode_query(QUERIES), lexical_world["encoder"].encode(QUERIES, "other-expert"),
                               atol=1e-5)
    np.testing.assert_allclose(model.encode_document(DOCUMENTS), lexical_world["encoder"].encode(DOCUMENTS),
                               atol=1e-5)
    assert json.loads((out / "routerretriever-export.json").read_text())["document"] == "base"


@pytest.mark.gpu
def test_routed_export_on_cuda(exported, mixed, toy_model_dir):
    """Loaded on a GPU, the base and every expert's factors move there, and the vectors are the CPU's."""
    cpu = load_routed_model(exported, device="cpu")
    gpu = load_routed_model(exported, device="cuda")
    module = gpu[0].sub_modules["query"][0]
    layers = [m for m in module.model.modules() if isinstance(m, RoutedLoRALinear)]
    assert layers and all(t.is_cuda for m in layers for factors in m.adapters.values() for t in factors)
    np.testing.assert_allclose(gpu.encode_query(QUERIES), cpu.encode_query(QUERIES), atol=1e-4)
    np.testing.assert_allclose(gpu.encode_document(DOCUMENTS), cpu.encode_document(DOCUMENTS), atol=1e-4)


@pytest.mark.realdata
def test_exports_on_real_data(real_data_dir, minilm, tmp_path):
    """The acceptance check with the real base model on AILA statutes' test queries (long legal texts, truncated
    as the base truncates them): the exported expert on both sides, and the routed model, with a shared-prefix
    expert (LoRA on the top 3 layers) and an all-layer one, routed among every system in mixed batches."""
    from eval.data import open_dataset
    from experts import TrainConfig, train_expert
    from retriever.encoding.expert_encoder import MultiExpertEncoder
    from retriever.index.faiss_index import build_index

    dataset = open_dataset(real_data_dir, "aila2019-statutes")
    index = build_index(dataset, minilm, tmp_path / "index")
    store = RouterDirectory(tmp_path / "router", minilm.info, create=True)
    for seed, (name, layers) in enumerate((("top", 3), ("all", 0))):
        trained = train_expert([(dataset, index)], minilm, TrainConfig(
            seed=seed, epochs=1, max_steps=2, batch_size=8, learning_rate=5e-3, heldout_fraction=0.25,
            select_on_heldout=False, lora_layers=layers))
        store.save_expert(name, trained.write, trained.meta())
    encoder = store.load_into(MultiExpertEncoder(minilm))
    try:
        train = list(dataset.split("train").queries.values())
        systems = ["base", "all", "top", "bm25", "hybrid:base", "hybrid:all", "hybrid:top"]
        labels = [systems[i % len(systems)] for i in range(len(train))]
        data = RoutingData(encoder.encode(train), labels, ["aila"] * len(train), {}, systems)
        store.save_router(fit_router("classifier", data, c=1e4), {"datasets": ["aila2019-statutes"]})
        queries = [text for _, text in sorted(dataset.split("test").queries.items())][:24]
        documents = [doc.text for doc, _ in zip(dataset.corpus(), range(12), strict=False)]

        expert = SentenceTransformer(str(export_expert(store, "top", minilm, tmp_path / "top")), device="cpu")
        np.testing.assert_allclose(expert.encode_query(queries), encoder.encode(queries, "top"), atol=1e-5)
        np.testing.assert_allclose(expert.encode_document(documents), minilm.encode(documents), atol=1e-5)

        routed = load_routed_model(export_routed(store.root, tmp_path / "routed", "classifier"), device="cpu")
        want, choice = routed_reference(store.root, "classifier", None, queries)
        assert len(set(choice)) >= 4, choice
        np.testing.assert_allclose(routed.encode_query(queries, batch_size=16), want, atol=1e-5)
        np.testing.assert_allclose(routed.encode_document(documents), minilm.encode(documents), atol=1e-5)
    finally:
        for name in ("top", "all"):
            encoder.remove(name)
