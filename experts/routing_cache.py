"""Routing data: every system scored on sampled training queries, cached, and labelled with its best system.

For each training dataset (train split only), a seeded sample of at most ``max_queries`` queries is encoded by
the base model and by every expert; each is scored by nDCG@10 over that dataset's corpus index. A query's
label is its best system (ties: the dataset's best system, then its own expert, then ``base``, then list
order). All of it is cached under ``<router>/routing-data/<dataset>/``, keyed by each expert's adapter
checksum, so adding an expert computes only its own scores and removing one computes nothing. Fitting and
refitting routers on it: ``experts.routing``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from eval.metrics import per_query_ndcg
from experts.pseudo import PseudoLabelled, corpus_queries
from experts.unfamiliar_scores import auto_scores as unfamiliar_auto_scores
from experts.unfamiliar_scores import evidence, evidence_complete
from retriever.encoding.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.index.base import IndexedCorpus
from retriever.ranking.systems import (
    BM25,
    FUSION_DEPTH,
    FUSION_VERSION,
    HYBRID,
    FusionSettings,
    auto,
    dense_part,
    fuse,
    is_auto,
    is_lexical,
    system_names,
)
from retriever.ranking.systems import hybrid as hybrid_name
from retriever.ranking.topk import search, search_lexical
from retriever.routers import RoutingData, RoutingSpace, best_expert
from retriever.routers.base import best_systems, unseen_rows
from retriever.routers.directory import RouterDirectory
from retriever.storage.files import ArtifactError, load_npy, read_json, save_npy

__all__ = [
    "HYBRID_WEIGHTS", "SPLIT", "cached_routing_data", "calibrate_hybrids", "expert_key",
    "hybrid_label", "index_sources", "lexical_key", "prefix_file", "prefix_layer", "routing_data", "routing_sample",
    "score_experts", "unlabelled_names",
]

logger = logging.getLogger(__name__)

SPLIT = "train"
PSEUDO_TIE = 1e-6  # on pseudo-queries a dense system scores this less than its auto system (cached_routing_data)
HYBRID_WEIGHTS = tuple(round(w, 1) for w in np.arange(0.0, 1.0001, 0.1))  # dense weights a hybrid is calibrated over


def expert_key(store: RouterDirectory, name: str) -> str:
    """Identifies an expert's weights (or the base model's) for the score cache."""
    if name == BASE_EXPERT:
        return store.base.fingerprint
    return store.expert_info(name)["files"]["adapter_model.safetensors"]


def routing_sample(dataset, index, max_queries: int = 500, seed: int = 0) -> tuple[list[str], list[str], dict]:
    """``(query ids, texts, qrels)``: the seeded sample of at most ``max_queries`` judged training queries whose
    routing scores ``score_experts`` caches (the defaults are ``build-router``'s)."""
    data = dataset.split(SPLIT)
    doc_ids = set(index.doc_ids)
    qids = sorted(q for q, judged in data.qrels.items() if any(s >= 1 and d in doc_ids for d, s in judged.items()))
    if len(qids) > max_queries:
        qids = sorted(np.random.default_rng(seed).choice(qids, size=max_queries, replace=False).tolist())
    return qids, [data.queries[q] for q in qids], {q: data.qrels[q] for q in qids}


def _read_cache(path: Path) -> dict:
    """A cached JSON object, or ``{}`` when it is missing or damaged (then it is computed again)."""
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except ArtifactError as err:
        logger.warning("recomputing %s: %s", path, err)
        return {}
    return data if isinstance(data, dict) else {}


_CACHE_FILES = ("queries.json", "base_vectors.npy", "prefix-*.npy", "scores-*.json")  # all score_experts writes


def _key(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def lexical_key(lexical) -> str:
    """Identifies a lexical index's content (its files' checksums) for the score cache."""
    return _key(lexical.meta["files"])


def score_experts(dataset, index, encoder: MultiExpertEncoder, store: RouterDirectory, experts: list[str],
                  max_queries: int, seed: int = 0, progress: bool = False, lexical=None,
                  layer: int | None = None) -> None:
    """Cache base vectors of the sampled training queries and each expert's per-query nDCG@10 on them; with a
    lexical index, also BM25's and each expert's hybrid at every weight of ``HYBRID_WEIGHTS`` (and RRF); with
    ``layer``, their base states entering that layer, mean-pooled (a prefix ``RoutingSpace``)."""
    qids, texts, qrels = routing_sample(dataset, index, max_queries, seed)
    pseudo = isinstance(dataset, PseudoLabelled)
    folder = store.routing_data_path(dataset.name, pseudo)
    folder.mkdir(parents=True, exist_ok=True)
    key = _key([qids, texts, qrels, index.meta["files"]])
    meta_path = folder / "queries.json"
    if _read_cache(meta_path).get("key") != key or not _readable(folder / "base_vectors.npy", len(qids)):
        for pattern in _CACHE_FILES:  # only the cache's own files: nothing else there is ever deleted
            for stale in folder.glob(pattern):
                stale.unlink()
        save_npy(folder / "base_vectors.npy", encoder.encode(texts, BASE_EXPERT))
        store.write_record(meta_path, {"key": key, "split": SPLIT, "query_ids": qids})
    if layer is not None and not _readable(folder / prefix_file(layer), len(qids)):
        save_npy(folder / prefix_file(layer), encoder.prefix_means(texts, layer))
    lex_key = None
    lexical_results = cache(lambda: search_lexical(lexical, texts, qids, FUSION_DEPTH))  # only if a score is missing
    if lexical is not None:
        lexical.check_corpus(index)
        lex_key = lexical_key(lexical)
        path = folder / f"scores-{BM25}.json"
        if not _current(_read_cache(path), "lexical_key", lex_key, len(qids)):
            per_query = per_query_ndcg(qrels, lexical_results())
            store.write_record(path, {"lexical_key": lex_key, "ndcg@10": [per_query[q] for q in qids]})
    base_vectors = None
    for name in tqdm(experts, desc=f"scoring experts on {dataset.name}", disable=not progress):
        path, expected = folder / f"scores-{name}.json", expert_key(store, name)
        cached = _read_cache(path)
        if _current(cached, "expert_key", expected, len(qids)) and (
                lexical is None or (cached.get("lexical_key") == lex_key and _hybrid_complete(cached, len(qids))
                                    and (name != BASE_EXPERT or evidence_complete(cached, len(qids), pseudo)))):
            if "trained_on" not in cached:  # caches written before the field existed: add it, nothing to encode
                store.write_record(path, {**cached, "trained_on": _trained_on(store, name, dataset, index, qids)})
            continue
        if name == BASE_EXPERT:
            base_vectors = load_npy(folder / "base_vectors.npy")
        vectors = base_vectors if name == BASE_EXPERT else encoder.encode(texts, name)
        results = search(index, vectors, qids, k=FUSION_DEPTH)
        per_query = per_query_ndcg(qrels, results)
        record = {"expert_key": expected, "ndcg@10": [per_query[q] for q in qids],
                  "trained_on": _trained_on(store, name, dataset, index, qids)}
        if lexical is not None:
            record.update(lexical_key=lex_key, fusion_version=FUSION_VERSION)
            record["hybrid"] = {label: [fused[q] for q in qids] for label, fused in
                                _hybrid_scores(qrels, qids, results, lexical_results()).items()}
            if name == BASE_EXPERT:  # what auto:base decides from (experts.unfamiliar_scores)
                record.update(evidence(qids, texts, results, lexical_results, encoder.base.model, index, pseudo))
        store.write_record(path, record)


def prefix_file(layer: int) -> str:
    """The routing-data file of the routing queries' mean-pooled base states entering ``layer``."""
    return f"prefix-{int(layer)}.npy"


def prefix_layer(store: RouterDirectory, encoder: MultiExpertEncoder) -> int | None:
    """The layer ``--route-on prefix`` routes on: the first layer any of the store's domain experts adapts (as
    loaded in ``encoder``), where every expert's pass starts (so routed search costs one encoder pass); None (base
    embeddings) without experts or when one adapts every layer."""
    starts = [encoder.start_layer(name) for name in store.candidates() if name != BASE_EXPERT]
    return min(starts) if starts and min(starts) > 0 else None


def hybrid_label(systems: FusionSettings, system: str) -> str:
    """Which of a score record's ``hybrid`` columns is ``system`` as ``systems`` fuses it: its calibrated weight,
    or ``rrf``."""
    return "rrf" if systems.fusion == "rrf" else f"{systems.weight(system):.1f}"


def _hybrid_scores(qrels, qids, dense, lexical) -> dict[str, dict[str, float]]:
    """Per-query nDCG@10 of ``dense`` fused with ``lexical``: ``{weight label: scores}`` and ``{"rrf": scores}``."""
    out = {}
    for weight in HYBRID_WEIGHTS:
        fused = {q: fuse(dense[q], lexical[q], weight, "convex") for q in qids}
        out[f"{weight:.1f}"] = per_query_ndcg(qrels, fused)
    out["rrf"] = per_query_ndcg(qrels, {q: fuse(dense[q], lexical[q], 0.0, "rrf") for q in qids})
    return out


def _hybrid_complete(cached: dict, rows: int) -> bool:
    """Cached hybrid scores at every weight (and RRF), one per query, from the current fusion."""
    hybrid = cached.get("hybrid")
    labels = [*(f"{w:.1f}" for w in HYBRID_WEIGHTS), "rrf"]
    return cached.get("fusion_version") == FUSION_VERSION and isinstance(hybrid, dict) and all(
        isinstance(hybrid.get(label), list) and len(hybrid[label]) == rows for label in labels)


def _current(cached: dict, key_field: str, key: str, rows: int) -> bool:
    scores = cached.get("ndcg@10")
    return cached.get(key_field) == key and isinstance(scores, list) and len(scores) == rows


def _readable(path: Path, rows: int) -> bool:
    try:
        return load_npy(path).shape[0] == rows
    except ArtifactError:
        return False


def _trained_on(store: RouterDirectory, name: str, dataset, index, qids: list[str]) -> list[bool]:
    """Per query: was it in the training slice of expert ``name`` (its score there is optimistic)? For an expert
    trained without judgments on the routing pseudo-queries' corpus: was it among the pseudo-queries drawn for it
    (routing ones are drawn from the other end of the order, ``experts.pseudo.routing_queries``, but a corpus with
    fewer documents than both draws shares some); where only one of the two is pseudo-queries, never."""
    from experts.config import TrainConfig
    from experts.train import heldout_split

    info = {} if name == BASE_EXPERT else store.expert_info(name)
    unlabelled = info.get("unlabelled")
    if unlabelled is not None or isinstance(dataset, PseudoLabelled):
        training = info.get("training", {})
        if not (isinstance(unlabelled, dict) and unlabelled.get("source") == "corpus"
                and isinstance(dataset, PseudoLabelled) and dataset.name in (training.get("datasets") or [])):
            return [False] * len(qids)
        seed = (training.get("hyperparameters") or {}).get("seed", 0)
        drawn = corpus_queries(dataset.source, int(unlabelled["pseudo_queries"]), seed).data.queries
        return [q in drawn for q in qids]
    training = info.get("training", {})
    datasets = training.get("datasets")
    if not isinstance(datasets, list) or dataset.name not in datasets or training.get("split") != SPLIT:
        return [False] * len(qids)
    try:
        config = TrainConfig.from_fields(training.get("hyperparameters"))
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"expert {name!r}: expert.json 'training.hyperparameters' is not a TrainConfig: "
                            f"{err}") from None
    _, train, _ = heldout_split(dataset, index.doc_ids, SPLIT, config)
    seen = {e.query_id for e in train}
    return [q in seen for q in qids]


def _column(store: RouterDirectory, dataset: str, name: str, key_field: str, key: str, pseudo: bool = False) -> dict:
    cached = _read_cache(store.routing_data_path(dataset, pseudo) / f"scores-{name}.json")
    if cached.get(key_field) != key or not isinstance(cached.get("ndcg@10"), list):
        raise ValueError(f"no current scores of {name!r} on {dataset!r}; run build-router")
    return cached


def calibrate_hybrids(store: RouterDirectory, datasets: list[str], hybrid: dict[str, dict[str, dict]],
                      trained: dict[str, dict[str, np.ndarray | None]], fusion: str = "convex") -> FusionSettings:
    """Each hybrid's dense weight from ``HYBRID_WEIGHTS``: the one with the best mean nDCG@10 on training queries
    the expert did not train on — an expert's own dataset's, the base model's over every dataset (mean of the
    datasets' means). Ties go to the lower weight. Training queries only: the routing data has no test split."""
    if fusion == "rrf":
        return FusionSettings("rrf")
    home = {expert: dataset for dataset, expert in store.domain_experts().items() if dataset in datasets}
    weights = {}
    for expert, by_dataset in hybrid.items():
        sets = [home[expert]] if expert in home else datasets

        def mean_at(label, sets=sets, by_dataset=by_dataset, expert=expert):
            means = []
            for d in sets:
                column = np.asarray(by_dataset[d][label], dtype=np.float64)
                means.append(column[unseen_rows(trained[expert][d], len(column))].mean())
            return float(np.mean(means))

        values = [mean_at(f"{w:.1f}") for w in HYBRID_WEIGHTS]
        weights[hybrid_name(expert)] = float(HYBRID_WEIGHTS[int(np.argmax(values))])
    return FusionSettings("convex", weights)


def cached_routing_data(store: RouterDirectory, datasets: list[str], lexical: dict[str, str] | None = None,
                        fusion: str = "convex", layer: int | None = None,
                        unlabelled: Sequence[str] = ()) -> RoutingData:
    """Label cached training queries with their best current system (ties: the dataset's best system, its own
    expert, base, list order).
    Without ``lexical`` the systems are the dense experts; with it (``{dataset: lexical_key}``) also ``bm25`` and
    each expert's hybrid at its calibrated weight (``calibrate_hybrids``). The vectors are base embeddings, or
    with ``layer`` the routing vectors of a prefix ``RoutingSpace`` centered on these queries.

    ``unlabelled``: datasets whose routing queries are pseudo-queries (sentences of their documents,
    ``experts.pseudo.routing_queries``). A sentence copied from its document is found by BM25 far more easily than
    a real query is (on the seven expert datasets BM25 was best for 72% of them, against 5% of judged training
    queries, and every hybrid weight calibrated on them was 0.0: BM25 alone), so they cannot measure what BM25 adds:
    with ``lexical`` there, systems ``auto:<expert>`` are added, which decide BM25 at search time without labels
    (``retriever.ranking.unfamiliar``), scored on pseudo-queries as their dense part; there the dense systems score
    ``PSEUDO_TIE`` less (so gains over the base stay what they are) and the lexical ones 0, so a pseudo-query's
    label is ``auto:`` its best dense system; hybrid weights are calibrated on the judged datasets only (none: each
    weighs ``DEFAULT_WEIGHT``). On judged queries an ``auto:`` system scores as its
    dense part too (a tie its dense system wins), so labels there are as before."""
    own = store.domain_experts()
    experts = store.candidates()
    records = {d: {name: _column(store, d, name, "expert_key", expert_key(store, name), d in unlabelled)
                   for name in experts}
               for d in datasets}
    trained = {name: {d: (None if records[d][name].get("trained_on") is None else
                          np.asarray(records[d][name]["trained_on"], dtype=bool)) for d in datasets}
               for name in experts}
    fusion_settings = None
    if lexical is not None:
        for d in datasets:
            for name in experts:
                record = records[d][name]
                if record.get("lexical_key") != lexical[d] or not _hybrid_complete(record, len(record["ndcg@10"])):
                    raise ValueError(f"no current hybrid scores of {name!r} on {d!r}; run build-router")
        judged = [d for d in datasets if d not in unlabelled]
        unjudged_home = {e for d, e in own.items() if d in unlabelled}  # no judged queries of its own to weigh on
        hybrid = {name: {d: records[d][name]["hybrid"] for d in judged} for name in experts
                  if name not in unjudged_home}
        fusion_settings = calibrate_hybrids(store, judged, hybrid, trained, fusion) if judged else \
            FusionSettings(fusion)
    pseudo = set(unlabelled) & set(datasets) if lexical is not None else set()
    systems = system_names(experts, lexical is not None) + ([auto(e) for e in experts] if pseudo else [])
    vectors, labels, names, all_scores, all_trained = [], [], [], [], []
    for d in datasets:
        bm25 = None if lexical is None else _column(store, d, BM25, "lexical_key", lexical[d], d in unlabelled)
        scores, masks = _score_matrix(systems, records[d], bm25, {e: trained[e][d] for e in experts},
                                      fusion_settings, d in pseudo)
        source = store.routing_data_path(d, d in unlabelled) / ("base_vectors.npy" if layer is None
                                                                else prefix_file(layer))
        if not _readable(source, len(scores)):
            raise ValueError(f"no current routing vectors {source.name} for {d!r}; run build-router"
                             + (" --route-on prefix" if layer is not None else ""))
        vectors.append(load_npy(source))
        names += [d] * len(scores)
        all_scores.append(scores)
        all_trained.append(None if any(m is None for m in masks) else np.array(masks, dtype=bool).T)
    dataset_experts = {d: e for d, e in own.items() if d in set(names)}
    trained_on = None if any(t is None for t in all_trained) else np.concatenate(all_trained)
    scores = np.concatenate(all_scores)
    # Over systems, a query's best is often a tie (nDCG@10 1.0 for several): ties go to the system that does
    # best on its dataset as a whole, so a label says "not the usual" only when another system really wins.
    dataset_systems = best_systems(names, systems, scores, trained_on, own) if lexical is not None else None
    labels = [best_expert(row, systems, [(dataset_systems or {}).get(d), own.get(d)])
              for row, d in zip(scores, names, strict=True)]
    vectors = np.concatenate(vectors)
    space = RoutingSpace() if layer is None else RoutingSpace.fitted(layer, vectors)
    auto_scores = None if lexical is None else unfamiliar_auto_scores(records, names, scores, systems, pseudo)
    return RoutingData(space.vectors(vectors), labels, names, dataset_experts, systems, scores, trained_on,
                       dataset_systems, fusion_settings, space, auto_scores)


def _score_matrix(systems: list[str], records: dict, bm25: dict | None, trained: dict, fusion: FusionSettings | None,
                  pseudo: bool) -> tuple[np.ndarray, list]:
    """One dataset's ``(queries x systems nDCG@10, per-system trained-on masks)`` from its cached ``records``
    (per dense expert) and ``bm25`` scores; ``pseudo``: its queries are pseudo-queries (``cached_routing_data``)."""
    columns, masks = [], []
    for system in systems:
        expert = dense_part(system)
        if system == BM25:
            columns.append(bm25["ndcg@10"])
            masks.append(np.zeros(len(columns[-1]), bool))
            continue
        record = records[expert]
        columns.append(record["hybrid"][hybrid_label(fusion, system)] if system.startswith(HYBRID) else
                       record["ndcg@10"])
        masks.append(trained[expert])
    scores = np.array(columns, dtype=np.float64).T
    if pseudo:  # pseudo-queries measure dense systems only, and each is answered by an auto system
        scores[:, [i for i, system in enumerate(systems) if is_lexical(system) and not is_auto(system)]] = 0.0
        scores[:, [i for i, system in enumerate(systems) if not is_lexical(system)]] -= PSEUDO_TIE
    return scores, masks


def routing_data(sources, encoder: MultiExpertEncoder, store: RouterDirectory, max_queries: int = 500, seed: int = 0,
                 progress: bool = False, lexical: dict | None = None, fusion: str = "convex",
                 layer: int | None = None) -> RoutingData:
    """Score what is not cached yet on ``sources`` (``(dataset, index)`` pairs; ``lexical``: ``{dataset name:
    LexicalIndex}`` to route among BM25 and hybrid systems too), then label from the cache; ``layer`` as in
    ``cached_routing_data``, whose ``unlabelled`` are the sources that are pseudo-queries (``unlabelled_names``)."""
    experts = store.candidates()
    for dataset, index in sources:
        score_experts(dataset, index, encoder, store, experts, max_queries, seed, progress,
                      None if lexical is None else lexical[dataset.name], layer)
    keys = None if lexical is None else {d.name: lexical_key(lexical[d.name]) for d, _ in sources}
    return cached_routing_data(store, [dataset.name for dataset, _ in sources], keys, fusion, layer,
                               unlabelled_names(sources))


def unlabelled_names(sources) -> list[str]:
    """The datasets of ``sources`` (``(dataset, index)`` pairs) whose training split is pseudo-queries."""
    return [dataset.name for dataset, _ in sources if isinstance(dataset, PseudoLabelled)]


def index_sources(sources) -> dict[str, dict]:
    """``{name: record}`` of the ``sources`` that are named indexes (``retriever.index.base.IndexedCorpus``), not
    datasets: what refitting reopens them by."""
    return {dataset.name: dict(dataset.source.record) for dataset, _ in sources
            if isinstance(getattr(dataset, "source", None), IndexedCorpus)}
