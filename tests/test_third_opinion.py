"""The third ranker that judges an unfamiliar corpus's BM25 (``retriever.ranking.third_opinion``) and the trust rule
it feeds (``retriever.ranking.unfamiliar.lexical_ratio``)."""

import numpy as np
import pytest
from conftest import write_toy_dataset

from eval.data import open_dataset
from retriever.index.faiss_index import build_index
from retriever.ranking.third_opinion import ThirdOpinion, TokenEmbeddingRanker
from retriever.ranking.unfamiliar import MIN_LEXICAL_RATIO, PRIOR_QUERIES, lexical_ratio, trusts_lexical


def test_the_token_ranker_ranks_by_the_base_models_input_embeddings(minilm):
    ranker = TokenEmbeddingRanker(minilm.model)
    vectors = ranker.embed(["dietary cholesterol and heart disease", "", "[CLS] [SEP]"])
    assert vectors.shape == (3, minilm.dim) and vectors[0].any()
    assert not vectors[1].any() and not vectors[2].any()  # no tokens (special ones left out): no direction
    table = minilm.model[0].auto_model.get_input_embeddings().weight.detach().numpy()
    ids = minilm.model.tokenizer("heart disease", add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(ranker.embed(["heart disease"])[0], table[ids].mean(axis=0), rtol=1e-6)
    documents = {"heart": "Cholesterol in the diet raises the risk of heart disease.",
                 "football": "The football season starts in August with the first league match.",
                 "untexted": "never a candidate"}
    ranked = ranker.rank({"q": "does cholesterol cause heart disease"}, {"q": ["football", "heart", "missing"]},
                         documents)
    assert list(ranked["q"]) == ["heart", "football"]  # candidates only, those with text, best first
    assert ranker.rank({}, {}, {}) == {}


def test_document_vectors_are_kept_across_calls_up_to_a_bound(minilm, monkeypatch):
    """A document's vector is the one ``embed`` gives, tokenised once while it stays among the last
    ``CACHED_DOCUMENTS`` texts (the oldest are dropped first)."""
    ranker = TokenEmbeddingRanker(minilm.model)
    texts = ["heart disease and diet", "football league", "heart disease and diet", "tax law"]
    np.testing.assert_array_equal(ranker.embed_documents(texts), ranker.embed(texts))
    assert ranker.embed_documents([]).shape == (0, minilm.dim)
    calls = []
    monkeypatch.setattr(ranker, "embed", lambda batch: calls.append(list(batch)) or TokenEmbeddingRanker.embed(
        ranker, batch))
    monkeypatch.setattr("retriever.ranking.third_opinion.CACHED_DOCUMENTS", 3)
    np.testing.assert_array_equal(ranker.embed_documents(texts[::-1]), TokenEmbeddingRanker.embed(ranker, texts[::-1]))
    assert calls == [[]]  # every text seen before
    ranker.embed_documents(["cricket"])  # a fourth text: the least recently used ("tax law", read first) goes
    ranker.embed_documents(["tax law", "football league"])
    assert calls == [[], ["cricket"], ["tax law"]]


def test_the_third_opinion_reads_candidate_texts_from_the_index_store(minilm, toy_encoder, tmp_path):
    write_toy_dataset(tmp_path / "beir")
    dataset = open_dataset(tmp_path / "beir", "toy")
    index = build_index(dataset, toy_encoder, tmp_path / "index")
    doc_ids = list(index.doc_ids)[:5]
    query = next(iter(dataset.queries().items()))
    third = ThirdOpinion(TokenEmbeddingRanker(minilm.model), index, dict([query]))
    ranked = third({query[0]: doc_ids + doc_ids[:2]})  # a document both systems returned counts once
    assert sorted(ranked[query[0]]) == sorted(doc_ids)
    texts = {d: f"{doc['title']} {doc['text']}".strip() for d, doc in index.documents(doc_ids).items()}
    assert ranked == TokenEmbeddingRanker(minilm.model).rank(dict([query]), {query[0]: doc_ids}, texts)


def test_lexical_ratio_is_the_third_rankers_agreement_with_bm25_over_its_agreement_with_the_base():
    n = 90
    assert lexical_ratio([(0.2, 0.3)] * n + [None] * 50, prior=0) == pytest.approx(1.5)  # unmatched: no evidence
    # the prior: PRIOR_QUERIES queries on which the third ranker sides wholly with the base
    assert lexical_ratio([(0.2, 0.3)] * n) == pytest.approx(0.3 * n / (0.2 * n + PRIOR_QUERIES))
    assert lexical_ratio([]) == 0.0 and lexical_ratio([], prior=0) == 0.0 and lexical_ratio([(0.0, 0.4)]) > 0
    disagreeing = [0.1] * 1000  # agreement alone would never trust this BM25
    assert not trusts_lexical(disagreeing) and not trusts_lexical(disagreeing, None)
    assert trusts_lexical(disagreeing, MIN_LEXICAL_RATIO) and not trusts_lexical(disagreeing, MIN_LEXICAL_RATIO - 0.01)
    # a handful of queries cannot switch a corpus to the hybrid, however wholly the third ranker sides with BM25
    assert not trusts_lexical(disagreeing[:5], lexical_ratio([(0.0, 1.0)] * 5))
    assert trusts_lexical(disagreeing, lexical_ratio([(0.5, 0.6)] * 200))


def test_auto_trusts_a_disagreeing_bm25_when_the_third_opinion_sides_with_it():
    """BM25 and a decided base disagree on every query: the base alone answers, unless the third ranker agrees with
    BM25 (then the base's first is the one it rejects: the hybrid answers); a third ranker siding with the base, or
    none (an index without text), leaves the base."""
    from retriever.ranking.systems import AUTO, resolve

    dense = {f"q{i}": {"a": 2.0, "b": 1.0} for i in range(40)}
    lexical = {q: {"c": 5.0, "d": 1.0} for q in dense}
    choice = dict.fromkeys(dense, AUTO)
    seen = []

    def third_siding_with(first):
        def third(candidates):
            seen.append(candidates)
            return {q: {first: 1.0, **{d: 0.5 for d in docs if d != first}} for q, docs in candidates.items()}
        return third

    assert set(resolve(choice, dense, lexical, third_siding_with("c")).values()) == {"hybrid:base"}
    assert seen[0]["q0"] == ["a", "b", "c", "d"]  # each query's documents from both systems
    assert set(resolve(choice, dense, lexical, third_siding_with("a")).values()) == {"base"}
    assert set(resolve(choice, dense, lexical, lambda candidates: None).values()) == {"base"}
    assert set(resolve(choice, dense, lexical).values()) == {"base"}
