"""``train-expert --unlabelled``: an expert from a corpus with no relevance judgments (issue #27), trained on
pseudo-labels (``experts.pseudo``) and saved only if a self-check on pseudo-queries of other documents says it beats
the base. Anchored (``--anchor-dataset``) on sentences of the anchor datasets' corpora, not on their training queries.

The self-check: training picks its step on a held-out slice of its pseudo-queries (as a labelled expert does on
judged queries), so its score there is the best of many looks and overstates the expert. The check is therefore
made on ``CHECK_QUERIES`` further pseudo-queries, drawn from documents no training or selection pseudo-query came
from (``experts.pseudo.corpus_split``), and it asks for evidence, not a size: the expert is kept only if the lower end
of the paired-bootstrap 95% interval of its nDCG@10 gain over the base there is above ``SELF_CHECK_MARGIN`` (0).
Otherwise nothing is saved and the error gives both scores and the interval (``force`` saves it anyway, marked so
in its ``expert.json``). Measured against real outcomes on the training and test splits: BENCHMARKS.md §13.
Labels from ``hybrid:base`` (``queries``) teach an expert to imitate the hybrid: on ArguAna such an expert lost 3.7
on the test split, so that source needs ``force`` (its check is on the corpus's sentences).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from eval.data import load_query_file, open_dataset
from eval.metrics import paired_bootstrap, per_query_ndcg
from experts.pseudo import PseudoLabelled, corpus_queries, corpus_split, corrected_queries, fused_rankings
from experts.train import TrainConfig, TrainedExpert
from experts.workflows.common import named_index, open_named_index
from experts.workflows.expert_store import check_anchors, check_new, check_refit_data, save_and_refit, train_anchored
from retriever.encoding.encoder import load_encoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.index.base import IndexConfig, IndexedCorpus
from retriever.ranking.systems import BASE, hybrid
from retriever.ranking.topk import search
from retriever.routers.directory import RouterDirectory, validate_name

__all__ = ["ANCHOR_PSEUDO_QUERIES", "CHECK_QUERIES", "PSEUDO_QUERIES", "SELF_CHECK_MARGIN", "SelfCheckError",
           "add_unlabelled_expert", "check_queries", "check_unlabelled_options", "corpus_pseudo", "pseudo_anchors",
           "refusal",
           "self_check", "train_checked"]

PSEUDO_QUERIES = 1000  # pseudo-queries drawn from the corpus (experts.pseudo.corpus_queries)
CHECK_QUERIES = 500  # pseudo-queries the self-check scores, from documents no training pseudo-query came from
SELF_CHECK_MARGIN = 0.0  # what the lower end of the 95% interval of the check's nDCG@10 gain must exceed
ANCHOR_PSEUDO_QUERIES = 200  # sentences of each anchor dataset's corpus, in place of its training queries


class SelfCheckError(ValueError):
    """An unlabelled expert whose gain over the base on the self-check's pseudo-queries is not significant."""


def check_unlabelled_options(unlabelled: bool, split: str, queries, pseudo_queries: int | None, force: bool,
                             dataset: str | None = None, index=None) -> None:
    """The options that go with ``--unlabelled`` only, the split it ignores, and the one corpus to train on: a
    dataset, or (``--unlabelled`` only) a named index (the CLI shows these as usage errors)."""
    if not unlabelled:
        given = [name for name, value in (("--index", index), ("--queries", queries),
                                          ("--pseudo-queries", pseudo_queries), ("--force", force)) if value]
        if given:
            raise ValueError(f"{', '.join(given)} only go with --unlabelled")
        if dataset is None:
            raise ValueError("give --dataset NAME: the dataset whose training judgments teach the expert")
    elif split != "train":
        raise ValueError(f"--unlabelled reads no split's judgments; drop --split {split}")
    elif (dataset is None) == (index is None):
        raise ValueError("give the corpus to train on as --dataset NAME (a BEIR folder) or --index DIR (a named index, "
                         "e.g. your collection indexed with `index --corpus FILE --output DIR`), "
                         + ("not both" if dataset else "one of them"))


def self_check(check: PseudoLabelled, index, encode_base, encode_expert, margin: float | None = None) -> dict:
    """The self-check's record: on the pseudo-queries ``check`` (none trained on or selected on), nDCG@10 of the
    base and the expert (``encode_*``: texts to query vectors) over ``index``, the expert's gain with its
    paired-bootstrap 95% interval, the margin its lower end must exceed (``SELF_CHECK_MARGIN`` unless given), and
    whether it passed."""
    margin = SELF_CHECK_MARGIN if margin is None else margin
    ids = list(check.data.queries)
    texts = [check.data.queries[q] for q in ids]
    base, expert = (per_query_ndcg(check.data.qrels, search(index, encode(texts), ids, k=100))
                    for encode in (encode_base, encode_expert))
    gain, low, high = paired_bootstrap([(expert, base)])
    return {"check_queries": len(ids), "base_ndcg@10": round(sum(base.values()) / len(ids), 5),
            "expert_ndcg@10": round(sum(expert.values()) / len(ids), 5), "gain": round(gain, 5),
            "interval": [round(low, 5), round(high, 5)], "margin": margin, "passed": low > margin}


def corpus_pseudo(source, count: int, seed: int) -> tuple[PseudoLabelled, PseudoLabelled]:
    """``(training, check)`` pseudo-queries from ``source``'s documents: ``count`` to train on and
    ``CHECK_QUERIES`` from other documents for the self-check (``corpus_split``: fewer of both on a small corpus)."""
    return corpus_split(source, count, CHECK_QUERIES, seed)


def check_queries(source, kind: str, count: int, seed: int) -> PseudoLabelled:
    """The self-check's pseudo-queries for an expert of source ``kind`` asked to draw ``count`` from ``source``:
    ``corpus_pseudo``'s check part, or (``queries``: trained on a query file) the corpus's first sentences."""
    return corpus_pseudo(source, count, seed)[1] if kind == "corpus" else corpus_queries(source, CHECK_QUERIES, seed)


def pseudo_anchors(datasets) -> list[PseudoLabelled]:
    """What an expert trained without judgments is anchored on (``TrainConfig.anchor_weight``): sentences of each
    anchor dataset's corpus in place of its training queries (``experts.pairs.anchor_texts`` reads a split's
    queries), so neither its own nor any other dataset's judgments are read, and a corpus alone can anchor."""
    return [corpus_queries(dataset, ANCHOR_PSEUDO_QUERIES) for dataset in datasets]


def train_checked(pseudo: PseudoLabelled, check_queries: PseudoLabelled, kind: str, index, encoder, config: TrainConfig,
                  anchor_sets, progress: bool) -> tuple[TrainedExpert, dict, dict]:
    """Train an expert on pseudo-labelled ``pseudo`` (source ``kind``) and self-check it on ``check_queries``:
    ``(trained, self-check record, the metadata it is saved with)``."""
    trained = train_anchored(pseudo, index, encoder, config, pseudo.data.name, anchor_sets, progress)
    check = {**self_check(check_queries, index, encoder.encode, trained.encode), "best_step": trained.best_step}
    record = {"source": kind, "pseudo_queries": len(pseudo.data.queries), "self_check": check,
              "forced": not check["passed"]}
    if isinstance(pseudo.source, IndexedCorpus):  # a named index's documents: where they were read
        record["index"] = dict(pseudo.source.record)
    meta = {**trained.meta(), "unlabelled": record}
    return trained, check, meta


def refusal(name: str, check: dict) -> str:
    """Why the self-check refused expert ``name``, with both scores."""
    low, high = check["interval"]
    return (f"unlabelled expert {name!r} not saved: on {check['check_queries']} pseudo-queries from documents it did "
            f"not train on it scores nDCG@10 {check['expert_ndcg@10']:.4f} against the base's "
            f"{check['base_ndcg@10']:.4f} ({check['gain']:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}]); the "
            f"self-check asks for the interval to lie above {check['margin']:+.4f} (BENCHMARKS.md §13)"
            + ("; training never beat the base on its own held-out pseudo-queries (best step 0: the expert is the "
               "base)" if check.get("best_step") == 0 else ""))


def pseudo_labelled(source, index, encoder, lexical, queries: str | os.PathLike | None, count: int, seed: int,
                    weight: float) -> tuple[PseudoLabelled, PseudoLabelled, str]:
    """``(pseudo-labelled split, self-check split, source name)``: the corpus's own sentences, or the queries of
    file ``queries`` labelled where ``hybrid:base`` (dense weight ``weight``) changes the base's first document
    (checked on the corpus's sentences)."""
    if queries is None:
        return *corpus_pseudo(source, count, seed), "corpus"
    texts = load_query_file(queries)
    dense, fused = fused_rankings(texts, index, encoder, lexical, weight)
    return corrected_queries(source, texts, fused, dense), check_queries(source, "queries", count, seed), "queries"


def add_unlabelled_expert(router_dir: str | os.PathLike, name: str, config: TrainConfig, *, data_dir=None,
                          dataset: str | None = None, index: str | os.PathLike | None = None,
                          queries: str | os.PathLike | None = None, pseudo_queries: int | None = None,
                          anchor_datasets: Sequence[str] = (), force: bool = False, cache_dir=None,
                          model: str | None = None, index_type: str = "flat", overwrite: bool = False,
                          progress: bool = False, backend: IndexBackend | None = None
                          ) -> tuple[Path, TrainedExpert, dict, list[str]]:
    """Train expert ``name`` without judgments on ``dataset`` (a BEIR folder under ``data_dir``: its corpus; queries
    and qrels are not read) or on ``index`` (a named index, e.g. a collection ``index --corpus FILE --output DIR``
    built: the documents its store holds): from pseudo-queries drawn from its documents, or with ``queries`` (a
    query file: ``.jsonl`` or one query per line) from those queries labelled by ``hybrid:base``. Saved (and the
    routers already built refitted, as ``train-expert`` does) only if it passes the self-check, or with ``force``.
    Returns ``(expert path, trained, self-check record, refitted routers)``."""
    validate_name(name)
    pseudo_queries = PSEUDO_QUERIES if pseudo_queries is None else pseudo_queries
    if pseudo_queries < 2:
        raise ValueError(f"pseudo-queries must be at least 2, got {pseudo_queries}")
    check_unlabelled_options(True, "train", queries, pseudo_queries, force, dataset, index)
    source = None if dataset is None else open_dataset(data_dir, dataset, judged=False)
    backend = backend or FaissBackend(cache_dir)
    own = dataset if index is None else named_index(backend, index)[0]  # a missing index fails before the model loads
    anchor_sets = [open_dataset(data_dir, other, judged=False) for other in dict.fromkeys(anchor_datasets)]
    check_anchors(own, config, anchor_sets)
    if queries is not None:
        load_query_file(queries)  # a missing or empty file fails before any model loads
        if not force:
            raise ValueError("--queries labels queries with hybrid:base, which teaches an expert to imitate it: on "
                             "ArguAna such an expert lost 3.7 nDCG@10 on test after passing the self-check of its "
                             "day, and today's check (sentences of the corpus) has not been measured on this source "
                             "(BENCHMARKS.md §13): pass --force to train one all the same")
    encoder = load_encoder(model)
    if source is None:  # of another model, or without its documents' text: fails before anything is written
        source, corpus_index, lexical = open_named_index(backend, index, encoder, lexical=queries is not None)
    store = RouterDirectory(router_dir, encoder.info, create=True)
    check_new(store, name, overwrite)
    check_refit_data(store, data_dir, backend)
    if index is None:
        corpus_index, lexical = backend.ensure(source, encoder, IndexConfig(index_type=index_type),
                                               lexical=queries is not None, progress=progress)
    weight = store.load_fusion().weight(hybrid(BASE))
    pseudo, check_queries, kind = pseudo_labelled(source, corpus_index, encoder, lexical, queries, pseudo_queries,
                                                  config.seed, weight)
    trained, check, meta = train_checked(pseudo, check_queries, kind, corpus_index, encoder, config,
                                         pseudo_anchors(anchor_sets), progress)
    if not check["passed"] and not force:
        raise SelfCheckError(f"{refusal(name, check)}. --force saves it anyway")
    refitted = save_and_refit(store, name, trained, meta, data_dir, backend, encoder, index_type, progress)
    return store.expert_path(name), trained, check, refitted
