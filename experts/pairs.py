"""Training examples from a BEIR dataset's qrels: each query with the corpus rows of its relevant documents."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

__all__ = ["Example", "anchor_texts", "data_fingerprint", "split_heldout", "training_examples"]


@dataclass(frozen=True)
class Example:
    query_id: str
    text: str
    positives: tuple[int, ...]  # rows of the corpus index (positives have qrels score >= 1)


def training_examples(dataset, split: str, doc_ids: list[str]) -> list[Example]:
    """One example per judged query of ``split`` that has at least one positive document in the index."""
    data = dataset.split(split)
    row_of = {doc_id: row for row, doc_id in enumerate(doc_ids)}
    examples = []
    for query_id, judged in data.qrels.items():
        rows = tuple(sorted(row_of[d] for d, score in judged.items() if score >= 1 and d in row_of))
        if rows:
            examples.append(Example(query_id, data.queries[query_id], rows))
    if not examples:
        raise ValueError(f"{dataset.name}/{split}: no query has a positive (score >= 1) judgment")
    return examples


def split_heldout(
    examples: list[Example], fraction: float, seed: int, groups: list[str] | None = None
) -> tuple[list[Example], list[Example]]:
    """A seeded held-out slice of the *training* split for model selection (never the test split).

    With ``groups`` (one label per example), whole groups are held out, so selection measures how an expert
    does on groups it never saw (SQuAD: articles, since its test articles are disjoint from its train ones).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    if len(examples) < 2:  # else nothing is held out, and held-out scores are the mean of nothing (NaN)
        raise ValueError(f"{len(examples)} training query with a positive judgment: an expert needs at least 2, "
                         "one of them held out to select the best epoch")
    size = min(max(1, round(len(examples) * fraction)), len(examples) - 1)
    rng = np.random.default_rng(seed)
    if groups is None:
        heldout = {int(i) for i in rng.permutation(len(examples))[:size]}
    else:
        if len(groups) != len(examples):
            raise ValueError(f"{len(groups)} group labels for {len(examples)} examples")
        members: dict[str, list[int]] = {}
        for i, group in enumerate(groups):
            members.setdefault(group, []).append(i)
        if len(members) < 2:
            raise ValueError(f"cannot hold out whole groups: all examples are in one group ({groups[0]!r})")
        heldout: set[int] = set()
        for group in rng.permutation(sorted(members)).tolist():
            if len(heldout) + len(members[group]) >= len(examples):  # never hold out everything
                continue
            heldout.update(members[group])
            if len(heldout) >= size:
                break
    train = [e for i, e in enumerate(examples) if i not in heldout]
    return train, [e for i, e in enumerate(examples) if i in heldout]


def anchor_texts(datasets, split: str = "train", queries: int = 200, documents: int = 0, seed: int = 0) -> list[str]:
    """Other domains' texts that an expert trained with ``anchor_weight`` keeps close to the base model: up to
    ``queries`` seeded judged queries of each dataset's ``split``, then up to ``documents`` seeded documents of
    each dataset's corpus (long texts, for an expert whose own queries are long)."""
    texts = []
    for dataset in datasets:
        data = dataset.split(split)
        ids = sorted(q for q in data.qrels if q in data.queries)
        picked = np.random.default_rng(seed).permutation(len(ids))[:queries]
        texts += [data.queries[ids[i]] for i in sorted(picked)]
    for dataset in datasets if documents > 0 else []:
        corpus = [doc.content() for doc in dataset.corpus()]
        picked = np.random.default_rng(seed).permutation(len(corpus))[:documents]
        texts += [corpus[i] for i in sorted(picked)]
    return texts


def data_fingerprint(parts: list[tuple[str, list[Example], list[str]]]) -> str:
    """sha256 of ``(dataset, examples, corpus doc ids)`` parts, so an expert records what it was trained on."""
    digest = hashlib.sha256()
    for name, examples, doc_ids in parts:
        digest.update(name.encode())
        for e in examples:
            digest.update(json.dumps([e.query_id, e.text, [doc_ids[r] for r in e.positives]]).encode())
    return digest.hexdigest()
