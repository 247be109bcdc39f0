"""Pseudo-labelled training data (experts.pseudo): sentences drawn from documents, unjudged queries labelled by
hybrid:base, and a split that trains an expert with no qrels."""

import pytest
from conftest import write_toy_dataset

from eval import open_dataset


@pytest.fixture()
def toy(tmp_path):
    write_toy_dataset(tmp_path)
    return open_dataset(tmp_path, "toy")


def test_sentences_keep_only_query_sized_ones():
    from experts.pseudo import SENTENCE_WORDS, sentences

    text = "Too short. " + "This sentence has exactly enough words to count. " + " ".join(["long"] * 50) + "."
    assert sentences(text) == ["This sentence has exactly enough words to count."]
    assert sentences("") == [] and SENTENCE_WORDS[0] <= 8 <= SENTENCE_WORDS[1]


def test_corpus_queries_label_each_sentence_with_its_document(toy):
    from experts.pseudo import corpus_queries

    pseudo = corpus_queries(toy, count=5, seed=0)
    data = pseudo.split("train")
    assert len(data.queries) == 5 and set(data.queries) == set(data.qrels)
    texts = {doc.id: doc.text for doc in toy.corpus()}
    for query_id, judged in data.qrels.items():
        (doc_id, score), = judged.items()
        assert query_id == f"pseudo:{doc_id}" and score == 1 and data.queries[query_id] in texts[doc_id]
    assert corpus_queries(toy, count=5, seed=0).split("train") == data  # seeded
    assert pseudo.name == "toy" and pseudo.doc_ids() == toy.doc_ids()
    with pytest.raises(ValueError, match="pseudo-labels are for split 'train', not 'test'"):
        pseudo.split("test")


def test_routing_queries_come_from_the_other_end_of_the_experts_draw(toy):
    """A router's pseudo-queries are not the ones an unlabelled expert of the same seed trained on."""
    from experts.pseudo import corpus_queries, routing_queries

    trained = corpus_queries(toy, count=8, seed=0).split("train")
    routed = routing_queries(toy, count=8, seed=0).split("train")
    assert len(routed.queries) == 8 and not set(routed.qrels) & set(trained.qrels)
    assert routing_queries(toy, count=8, seed=0).split("train") == routed  # seeded, as refitting redraws them


def test_agreed_queries_take_the_fused_first_document_and_drop_the_rest(toy):
    from experts.pseudo import agreed_queries

    queries = {"a": "solar power", "b": "whales", "c": "no lexical match"}
    fused = {"a": {"solar-1": 0.9, "solar-2": 0.5}, "b": {"whale-2": 0.8}, "c": {}}
    data = agreed_queries(toy, queries, fused).split("train")
    assert data.qrels == {"a": {"solar-1": 1}, "b": {"whale-2": 1}} and data.queries == {"a": "solar power",
                                                                                         "b": "whales"}
    with pytest.raises(ValueError, match="1 of 3 queries have a fused first document"):
        agreed_queries(toy, queries, {"a": fused["a"]})


def test_an_expert_trains_on_pseudo_labels_alone(toy, toy_encoder, tmp_path):
    """No qrels reach training: the expert's held-out slice and selection are the pseudo-labels'."""
    from experts import TrainConfig
    from experts.pseudo import corpus_queries
    from experts.train import train_expert
    from retriever import build_index

    index = build_index(toy, toy_encoder, tmp_path / "index")
    pseudo = corpus_queries(toy, count=20, seed=0)
    trained = train_expert([(pseudo, index)], toy_encoder, TrainConfig(max_steps=2, batch_size=4, eval_steps=1))
    assert trained.train_queries + trained.heldout_queries == len(pseudo.split("train").queries)
    assert 0 <= trained.heldout_base_ndcg_at_10 <= 1


def test_the_self_check_draws_from_documents_training_never_reads(toy):
    """``corpus_split``: training's part is ``corpus_queries``' own draw where the corpus has documents for both,
    the check's documents are others; a small corpus keeps half for the check."""
    from experts.pseudo import corpus_queries, corpus_split

    train, check = corpus_split(toy, count=6, check=4, seed=3)
    assert train.data.queries == corpus_queries(toy, 6, seed=3).data.queries
    assert len(check.data.queries) == 4 and not set(train.data.queries) & set(check.data.queries)
    assert not set().union(*train.data.qrels.values()) & set().union(*check.data.qrels.values())
    train, check = corpus_split(toy, count=100, check=500, seed=3)
    assert len(train.data.queries) == len(check.data.queries) == 10  # 20 documents
    train, check = corpus_split(toy, count=4, check=30, seed=3)  # too few for both, the check over half: training 4
    assert len(train.data.queries) == 4 and len(check.data.queries) == 16
    with pytest.raises(ValueError, match="drew 2 pseudo-queries of the 2 asked"):
        corpus_split(toy, count=1, check=1)


def test_an_expert_no_better_than_the_base_fails_the_self_check(toy, toy_encoder, tmp_path):
    """The check asks for the gain's 95% interval to lie above the margin: the base itself (gain 0) fails."""
    from experts.pseudo import corpus_split
    from experts.workflows.unlabelled import refusal, self_check
    from retriever import build_index

    index = build_index(toy, toy_encoder, tmp_path / "index")
    check = corpus_split(toy, count=10, check=10)[1]
    record = self_check(check, index, toy_encoder.encode, toy_encoder.encode)
    assert record["gain"] == 0 and record["interval"] == [0, 0] and not record["passed"]
    assert record["check_queries"] == 10 and record["base_ndcg@10"] == record["expert_ndcg@10"]
    assert self_check(check, index, toy_encoder.encode, toy_encoder.encode, margin=-0.01)["passed"]
    assert "best step 0: the expert is the base" in refusal("x", {**record, "best_step": 0})
    assert "95% interval [+0.0000, +0.0000]" in refusal("x", {**record, "best_step": 3})
    assert "best step" not in refusal("x", {**record, "best_step": 3})


def test_corrected_queries_keep_only_where_the_fusion_changed_the_first_document(toy):
    from experts.pseudo import corrected_queries

    queries = {"a": "solar power", "b": "whales", "c": "bread"}
    fused = {"a": {"solar-1": 0.9}, "b": {"whale-2": 0.8}, "c": {"bread-1": 0.7}}
    dense = {"a": {"solar-2": 0.9, "solar-1": 0.8}, "b": {"whale-2": 0.9}, "c": {"coffee-1": 0.5}}
    data = corrected_queries(toy, queries, fused, dense).split("train")
    assert data.qrels == {"a": {"solar-1": 1}, "c": {"bread-1": 1}}  # b: the fusion kept the base's first
