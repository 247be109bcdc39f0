import threading

import numpy as np
import pytest
import torch
from conftest import FAST

from eval.data import open_dataset
from experts import TrainConfig, split_heldout, train_expert
from experts.pairs import Example, anchor_texts
from retriever.encoding.encoder import load_encoder
from retriever.encoding.expert_encoder import MultiExpertEncoder
from retriever.index.faiss_index import build_index
from retriever.routers.directory import RouterDirectory, validate_name
from retriever.storage.files import ArtifactError

QUERIES = ["what is known about volcanoes", "jazz from new orleans", "blood sugar", "the moon and tides"]


@pytest.fixture(scope="module")
def trained(toy_encoder, tmp_path_factory):
    """Two experts trained on the toy dataset's train split with different seeds, saved in one router."""
    from conftest import train_toy_experts

    return train_toy_experts(toy_encoder, tmp_path_factory.mktemp("experts"), {"alpha": {"seed": 0},
                                                                               "beta": {"seed": 1}})


@pytest.mark.parametrize("name, message", [
    ("sci fact", "invalid expert name 'sci fact'"), ("../evil", "invalid expert name '../evil'"),
    ("a/b", "invalid expert name 'a/b'"), ("", "invalid expert name ''"), ("..", "invalid expert name '..'"),
    ("/abs", "invalid expert name '/abs'"), (".hidden", "invalid expert name '.hidden'"),
    ("base", "invalid expert name 'base': reserved for the base model"),
])
def test_bad_names(name, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        validate_name(name)


def test_bad_train_config():
    with pytest.raises(ValueError, match="anchor_weight must be >= 0, got -1"):
        TrainConfig(anchor_weight=-1)
    with pytest.raises(ValueError, match="anchor_documents must be an integer, got 2.5"):
        TrainConfig(anchor_weight=1, anchor_documents=2.5)
    with pytest.raises(ValueError, match="anchor_documents is 10 but anchor_weight is 0"):
        TrainConfig(anchor_documents=10)
    with pytest.raises(ValueError, match="unknown negatives 'all'; valid: corpus, hard, in-batch"):
        TrainConfig(negatives="all")
    with pytest.raises(ValueError, match="learning_rate must be in"):
        TrainConfig(learning_rate=0)
    with pytest.raises(ValueError, match="unknown positives 'some'; valid: sampled, all"):
        TrainConfig(positives="some")
    with pytest.raises(ValueError, match="unknown heldout_groups 'doc'; valid: query, title"):
        TrainConfig(heldout_groups="doc")


def test_train_config_from_json_fields(tmp_path):
    from experts.workflows import load_overrides

    assert TrainConfig.from_fields({"max_steps": 7}) == TrainConfig(max_steps=7)
    with pytest.raises(ValueError, match=r"unknown training setting\(s\) 'steps'; valid: r, lora_alpha"):
        TrainConfig.from_fields({"steps": 7})
    overrides = tmp_path / "overrides.json"
    overrides.write_text('{"datasets": {"scifact": {"max_step": 300}}}')
    with pytest.raises(ValueError, match=r"overrides.json: overrides for 'scifact': unknown training setting\(s\) "
                                         "'max_step'"):
        load_overrides(overrides)
    overrides.write_text('{"datasets": {"scifact": {"max_steps": 0}}}')
    with pytest.raises(ValueError, match="overrides for 'scifact': max_steps must be a positive integer, got 0"):
        load_overrides(overrides)


def test_heldout_by_group_keeps_groups_whole():
    examples = [Example(f"q{i}", f"query {i}", (i,)) for i in range(40)]
    groups = [f"article{i % 8}" for i in range(40)]
    train, heldout = split_heldout(examples, 0.2, seed=0, groups=groups)
    held_groups = {groups[int(e.query_id[1:])] for e in heldout}
    assert len(heldout) == 10 and len(held_groups) == 2  # two whole groups of 5
    assert not held_groups & {groups[int(e.query_id[1:])] for e in train}
    assert split_heldout(examples, 0.2, 0, groups) == (train, heldout)  # seeded
    with pytest.raises(ValueError, match="all examples are in one group"):
        split_heldout(examples, 0.2, 0, ["same"] * 40)


def test_expert_directory(trained):
    store = trained["store"]
    assert store.expert_names() == ["alpha", "beta"]
    path = store.expert_path("alpha")
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "expert.json"]
    assert sum(p.stat().st_size for p in path.iterdir()) < 2 * 1024 * 1024
    info = store.expert_info("alpha")
    assert info["name"] == "alpha" and info["domain"] == "toy" and info["training"]["datasets"] == ["toy"]
    assert info["base_model"]["fingerprint"] == store.base.fingerprint
    training = info["training"]
    assert training["split"] == "train" and len(training["data_fingerprint"]) == 64
    assert training["hyperparameters"]["r"] == 8 and training["hyperparameters"]["lora_alpha"] == 32
    assert training["train_queries"] == 3 and training["heldout_queries"] == 1
    assert [h["epoch"] for h in training["history"]] == [0, 1, 2]
    assert [h["step"] for h in training["history"]] == [0, 2, 4]
    assert "heldout_ndcg@10" in info["metrics"]


def test_saved_expert_gives_the_trained_vectors(trained, toy_encoder):
    encoder = trained["store"].load_into(MultiExpertEncoder(toy_encoder))
    try:
        for name in ("alpha", "beta"):
            expected = trained["trained"][name].encode(QUERIES)  # the selected epoch's weights
            np.testing.assert_allclose(encoder.encode(QUERIES, name), expected, atol=1e-5)
        assert not np.allclose(encoder.encode(QUERIES, "alpha"), encoder.encode(QUERIES, "base"), atol=1e-4)
        np.testing.assert_allclose(encoder.encode(QUERIES, "base"), toy_encoder.encode(QUERIES), atol=1e-6)
    finally:
        for name in ("alpha", "beta"):
            encoder.remove(name)


def test_selection_keeps_the_best_heldout_epoch(trained, toy_encoder):
    config = TrainConfig(**{**FAST, "epochs": 4, "select_on_heldout": True, "patience": 0})
    result = train_expert([(trained["dataset"], trained["index"])], toy_encoder, config)
    scores = [h["heldout_ndcg@10"] for h in result.history]
    best = int(np.argmax(scores))  # first best wins; the base model (step 0) if nothing beats it
    assert (result.best_step, result.best_epoch) == (result.history[best]["step"], result.history[best]["epoch"])
    assert result.heldout_ndcg_at_10 == pytest.approx(max(scores), abs=1e-5)
    assert len(result.history) <= best + 2  # patience 0: stops at the first evaluation that is not better


def test_step_budget_and_evaluation_interval(trained, toy_encoder):
    config = TrainConfig(**{**FAST, "epochs": 5, "max_steps": 7, "eval_steps": 3, "batch_size": 1})
    result = train_expert([(trained["dataset"], trained["index"])], toy_encoder, config)
    assert [h["step"] for h in result.history] == [0, 3, 6, 7]  # every 3 steps and at the budget


def test_training_refuses_the_test_split(trained, toy_encoder):
    with pytest.raises(ValueError, match="experts are never trained on the test split"):
        train_expert([(trained["dataset"], trained["index"])], toy_encoder, TrainConfig(**FAST), split="test")


def test_training_is_deterministic(trained, toy_encoder):
    again = train_expert([(trained["dataset"], trained["index"])], toy_encoder, TrainConfig(seed=0, **FAST))
    from peft import get_peft_model_state_dict

    first = get_peft_model_state_dict(trained["trained"]["alpha"].peft_model)
    second = get_peft_model_state_dict(again.peft_model)
    assert first.keys() == second.keys()
    for key in first:
        assert np.array_equal(first[key].numpy(), second[key].numpy()), key


def test_routed_batch_and_threads(trained, toy_encoder):
    encoder = trained["store"].load_into(MultiExpertEncoder(toy_encoder))
    try:
        alone = {name: encoder.encode(QUERIES, name) for name in encoder.names}
        routed = encoder.encode_each(QUERIES, ["alpha", "beta", "base", "alpha"])
        np.testing.assert_allclose(routed, np.stack([alone["alpha"][0], alone["beta"][1], alone["base"][2],
                                                     alone["alpha"][3]]), atol=1e-6)
        outputs, errors = {}, []
        barrier = threading.Barrier(3)

        def work(name):
            try:
                barrier.wait()
                outputs[name] = [encoder.encode(QUERIES, name) for _ in range(5)]
            except Exception as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(n,)) for n in ("alpha", "beta", "base")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for name, runs in outputs.items():
            for vectors in runs:
                np.testing.assert_array_equal(vectors, alone[name])
    finally:
        for name in ("alpha", "beta"):
            encoder.remove(name)


def test_duplicate_unknown_and_remove(trained, toy_encoder, tmp_path):
    store = trained["store"]
    with pytest.raises(FileExistsError, match="experts/alpha already exists; pass --overwrite"):
        store.save_expert("alpha", trained["trained"]["alpha"].write, {})
    with pytest.raises(ValueError, match="unknown expert 'gamma'; available: alpha, beta"):
        store.expert_path("gamma")
    encoder = MultiExpertEncoder(toy_encoder)
    with pytest.raises(ValueError, match="unknown expert 'gamma'; available: base"):
        encoder.encode(["x"], "gamma")
    # Removing one expert leaves the others byte-for-byte as they were.
    import shutil

    copy = RouterDirectory(shutil.copytree(store.root, tmp_path / "router"), store.base)
    before = {p.name: p.read_bytes() for p in copy.expert_path("beta").iterdir()}
    copy.remove_expert("alpha")
    assert copy.expert_names() == ["beta"]
    assert {p.name: p.read_bytes() for p in copy.expert_path("beta").iterdir()} == before
    assert sorted(p.name for p in (copy.root / "experts").iterdir()) == ["beta"]


def test_other_base_model_is_refused(trained, other_model_dir):
    other = load_encoder(other_model_dir, device="cpu")
    refused = r"router .* was built on base model '.*toy32' \(dim 32.*loaded base model is '.*toy16'"
    with pytest.raises(ArtifactError, match=refused):
        RouterDirectory(trained["store"].root, other.info)
    with pytest.raises(ValueError, match=r"adapter factors for .* have shapes"):
        MultiExpertEncoder(other).add("alpha", trained["store"].load_factors("alpha"))


@pytest.mark.parametrize("negatives, positives", [("hard", "all"), ("in-batch", "all"), ("corpus", "sampled")])
def test_other_loss_settings_train(trained, toy_encoder, negatives, positives):
    config = TrainConfig(**{**FAST, "epochs": 1, "negatives": negatives, "hard_negatives": 4, "positives": positives})
    result = train_expert([(trained["dataset"], trained["index"])], toy_encoder, config)
    assert result.config.negatives.value == negatives and np.isfinite(result.history[-1]["loss"])
    queries = list(trained["dataset"].split("train").queries.values())[:8]
    moved = np.abs(result.encode(queries) - toy_encoder.encode(queries)).max()
    assert moved > 1e-4  # the adapter learned something: its query vectors are no longer the base's


def test_base_dropout_off_trains_deterministically_and_only_lora_dropout_stays(trained, toy_encoder):
    config = TrainConfig(**{**FAST, "epochs": 1, "base_dropout": False})
    runs = [train_expert([(trained["dataset"], trained["index"])], toy_encoder, config) for _ in range(2)]
    assert runs[0].history == runs[1].history and runs[0].meta()["training"]["hyperparameters"]["base_dropout"] is False
    rates = {name: m.p for name, m in runs[0].peft_model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert rates and all((p == 0.1) == ("lora_dropout" in name) for name, p in rates.items())


def test_loss_settings_agree_when_a_query_has_one_positive(trained, toy_encoder):
    """With a single positive, "all" (log of the positive set's probability) is plain InfoNCE ("sampled")."""
    import dataclasses

    import torch
    from sentence_transformers import SentenceTransformer

    from experts.train import TrainingSource, batch_loss

    source = TrainingSource(trained["dataset"], trained["index"], "train", TrainConfig(**FAST))
    source.train = [dataclasses.replace(e, positives=e.positives[:1]) for e in source.train]
    model = SentenceTransformer(str(toy_encoder.path), device="cpu")
    batch = np.arange(len(source.train))
    losses = {}
    for positives in ("all", "sampled"):
        config = TrainConfig(**{**FAST, "positives": positives})
        with torch.no_grad():
            losses[positives] = float(batch_loss(model, source, batch, config, np.random.default_rng(0)))
    assert losses["all"] == pytest.approx(losses["sampled"], rel=1e-6)


def test_anchor_texts_are_seeded_queries_then_documents(data_dir):
    dataset = open_dataset(data_dir, "toy")
    queries = anchor_texts([dataset], queries=3)
    assert len(queries) == 3 and set(queries) <= set(dataset.split("train").queries.values())
    assert anchor_texts([dataset], queries=3) == queries
    texts = anchor_texts([dataset], queries=3, documents=5)
    documents = {doc.content() for doc in dataset.corpus()}
    assert texts[:3] == queries and len(texts) == 8 and set(texts[3:]) <= documents


def test_anchors_keep_other_domains_queries_near_the_base(trained, toy_encoder):
    """The anchor term pulls the expert's vectors of other domains' queries towards the base's; without a weight
    the anchors change nothing (the same training as before)."""
    anchors = ["stock market crash of 1929", "how to bake sourdough bread", "rules of cricket", *QUERIES]
    base = toy_encoder.encode(anchors)
    drift = {}
    for weight in (0.0, 50.0):
        config = TrainConfig(**{**FAST, "epochs": 3, "anchor_weight": weight})
        result = train_expert([(trained["dataset"], trained["index"])], toy_encoder, config, anchors=anchors)
        vectors = result.encode(anchors)
        drift[weight] = float(((vectors - base) ** 2).sum(axis=1).mean())
        assert result.meta()["training"]["anchor_texts"] == (len(anchors) if weight else 0)
        if not weight:
            plain = train_expert([(trained["dataset"], trained["index"])], toy_encoder, config)
            assert plain.history == result.history
    assert 0 < drift[50.0] < drift[0.0] / 2, drift
    config = TrainConfig(**{**FAST, "anchor_weight": 1.0})
    with pytest.raises(ValueError, match="anchor_weight is 1.0 but no anchors were given"):
        train_expert([(trained["dataset"], trained["index"])], toy_encoder, config)


def test_multitask_expert_balances_datasets(trained, toy_encoder, tmp_path):
    from conftest import write_toy_dataset

    write_toy_dataset(tmp_path, name="other")
    other = open_dataset(tmp_path, "other")
    sources = [(trained["dataset"], trained["index"]), (other, build_index(other, toy_encoder, tmp_path / "idx"))]
    config = TrainConfig(**{**FAST, "epochs": 1, "queries_per_dataset": 5})
    result = train_expert(sources, toy_encoder, config)
    assert result.datasets == ["toy", "other"]
    assert result.meta()["domain"] == "toy+other"
    assert result.train_queries == 6 and result.heldout_queries == 2
