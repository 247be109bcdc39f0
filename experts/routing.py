"""Building routers from training data: per-query scores of every expert, best-expert labels, fitting.

For each training dataset (train split only), a seeded sample of at most ``max_queries`` queries is encoded by
the base model and by every expert; each is scored by nDCG@10 over that dataset's corpus index. A query's
label is its best expert (ties: the dataset's own expert, then ``base``, then the expert list order). All of
it is cached under ``<router>/routing-data/<dataset>/``, keyed by each expert's adapter checksum, so adding an
expert computes only its own scores and removing one computes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from eval.metrics import per_query_ndcg
from retriever.artifacts import ArtifactError, check_fields, load_npy, read_json, save_npy
from retriever.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.ranking import search
from retriever.router_dir import RouterDirectory
from retriever.routers import RoutingData, best_expert, fit_router, novelty_kinds

__all__ = [
    "build_router", "cached_routing_data", "expert_key", "refresh_routers", "routing_data",
    "score_experts",
]

logger = logging.getLogger(__name__)

SPLIT = "train"
NOVELTY = "auto"  # the default novelty fallback of routers that keep reference vectors (build_router)


def expert_key(store: RouterDirectory, name: str) -> str:
    """Identifies an expert's weights (or the base model's) for the score cache."""
    if name == BASE_EXPERT:
        return store.base.fingerprint
    return store.info(name)["files"]["adapter_model.safetensors"]


def _sample(dataset, index, max_queries: int, seed: int) -> tuple[list[str], list[str], dict]:
    data = dataset.split(SPLIT)
    doc_ids = set(index.doc_ids)
    qids = sorted(q for q, judged in data.qrels.items() if any(s >= 1 and d in doc_ids for d, s in judged.items()))
    if len(qids) > max_queries:
        qids = sorted(np.random.default_rng(seed).choice(qids, size=max_queries, replace=False).tolist())
    return qids, [data.queries[q] for q in qids], {q: data.qrels[q] for q in qids}


def _folder(store: RouterDirectory, dataset_name: str) -> Path:
    return store.routing_data_path(dataset_name)


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


_CACHE_FILES = ("queries.json", "base_vectors.npy", "scores-*.json")  # all that score_experts writes there


def score_experts(dataset, index, encoder: MultiExpertEncoder, store: RouterDirectory, experts: list[str],
                  max_queries: int, seed: int = 0, progress: bool = False) -> None:
    """Cache base vectors of the sampled training queries and each expert's per-query nDCG@10 on them."""
    qids, texts, qrels = _sample(dataset, index, max_queries, seed)
    folder = _folder(store, dataset.name)
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps([qids, texts, qrels, index.meta["files"]], sort_keys=True).encode()).hexdigest()
    meta_path = folder / "queries.json"
    if _read_cache(meta_path).get("key") != key or not _readable(folder / "base_vectors.npy", len(qids)):
        for pattern in _CACHE_FILES:  # only the cache's own files: nothing else there is ever deleted
            for stale in folder.glob(pattern):
                stale.unlink()
        save_npy(folder / "base_vectors.npy", encoder.encode(texts, BASE_EXPERT))
        store.write_record(meta_path, {"key": key, "split": SPLIT, "query_ids": qids})
    base_vectors = None
    for name in tqdm(experts, desc=f"scoring experts on {dataset.name}", disable=not progress):
        path, expected = folder / f"scores-{name}.json", expert_key(store, name)
        cached = _read_cache(path)
        if cached.get("expert_key") == expected and len(cached.get("ndcg@10") or []) == len(qids):
            if "trained_on" not in cached:  # caches written before the field existed: add it, nothing to encode
                store.write_record(path, {**cached, "trained_on": _trained_on(store, name, dataset, index, qids)})
            continue
        if name == BASE_EXPERT:
            base_vectors = load_npy(folder / "base_vectors.npy")
        vectors = base_vectors if name == BASE_EXPERT else encoder.encode(texts, name)
        per_query = per_query_ndcg(qrels, search(index, vectors, qids, k=100))
        store.write_record(path, {"expert_key": expected, "ndcg@10": [per_query[q] for q in qids],
                                  "trained_on": _trained_on(store, name, dataset, index, qids)})


def _readable(path: Path, rows: int) -> bool:
    try:
        return load_npy(path).shape[0] == rows
    except ArtifactError:
        return False


def _trained_on(store: RouterDirectory, name: str, dataset, index, qids: list[str]) -> list[bool]:
    """Per query: was it in the training slice of expert ``name`` (its score there is optimistic)?"""
    from experts.train import TrainConfig, heldout_split

    training = {} if name == BASE_EXPERT else store.info(name).get("training", {})
    if dataset.name not in training.get("datasets", []) or training.get("split") != SPLIT:
        return [False] * len(qids)
    _, train, _ = heldout_split(dataset, index.doc_ids, SPLIT, TrainConfig(**training["hyperparameters"]))
    seen = {e.query_id for e in train}
    return [q in seen for q in qids]


def cached_routing_data(store: RouterDirectory, datasets: list[str]) -> RoutingData:
    """Label cached training queries with their best current expert (ties: own expert, base, list order)."""
    own = store.domain_experts()
    experts = store.candidates()
    vectors, labels, names, all_scores, all_trained = [], [], [], [], []
    for dataset in datasets:
        folder = _folder(store, dataset)
        columns, trained = [], []
        for name in experts:
            path = folder / f"scores-{name}.json"
            cached = _read_cache(path)
            if cached.get("expert_key") != expert_key(store, name) or not isinstance(cached.get("ndcg@10"), list):
                raise ValueError(f"no current scores of expert {name!r} on {dataset!r}; run build-router")
            columns.append(cached["ndcg@10"])
            trained.append(cached.get("trained_on"))
        scores = np.array(columns, dtype=np.float64).T
        labels += [best_expert(row, experts, own.get(dataset)) for row in scores]
        vectors.append(load_npy(folder / "base_vectors.npy"))
        names += [dataset] * len(scores)
        all_scores.append(scores)
        all_trained.append(None if None in trained else np.array(trained, dtype=bool).T)
    dataset_experts = {d: e for d, e in own.items() if d in set(names)}
    trained_on = None if any(t is None for t in all_trained) else np.concatenate(all_trained)
    return RoutingData(np.concatenate(vectors), labels, names, dataset_experts, experts, np.concatenate(all_scores),
                       trained_on)


def routing_data(sources, encoder: MultiExpertEncoder, store: RouterDirectory, max_queries: int = 500, seed: int = 0,
                 progress: bool = False) -> RoutingData:
    """Score what is not cached yet on ``sources`` (``(dataset, index)`` pairs), then label from the cache."""
    experts = store.candidates()
    for dataset, index in sources:
        score_experts(dataset, index, encoder, store, experts, max_queries, seed, progress)
    return cached_routing_data(store, [dataset.name for dataset, _ in sources])


def build_router(store: RouterDirectory, kind: str, data: RoutingData, info: dict, **options) -> Path:
    """Fit router ``kind`` (options as ``retriever.routers.fit_router`` takes them) and save it in the store.
    Unless told otherwise, a router that keeps reference vectors gets ``novelty="auto"``: a query unlike every
    training domain goes to the base model, below a similarity calibrated on the training data's folds."""
    if kind in novelty_kinds():
        options.setdefault("novelty", NOVELTY)
    for calibrated in ("min_confidence", "min_similarity"):  # refitting: "auto" is calibrated again, a number kept
        options.pop(calibrated, None)
    router = fit_router(kind, data, **options)
    counts = {e: data.labels.count(e) for e in data.experts}
    return store.save_router(router, {**info, "label_counts": counts})


def refresh_routers(store: RouterDirectory, encoder: MultiExpertEncoder | None = None, open_source=None,
                    progress: bool = False) -> list[str]:
    """Refit every saved router for the current experts, without retraining any expert.

    After a removal nothing is encoded (the remaining experts' scores are cached). After an addition, pass
    ``encoder`` (with the new expert loaded) and ``open_source(dataset_name) -> (dataset, index)`` so the new
    expert's scores can be computed. Returns the names of the routers refitted.
    """
    refitted = []
    for kind in store.built_routers():
        path = store.router_path(kind)
        router = store.load_router(kind)
        info = router.info
        check_fields(info, {"datasets": list, "max_queries": int, "seed": int}, f"{path / 'routing.json'} info")
        if open_source is not None:
            sources = [open_source(name) for name in info["datasets"]]
            data = routing_data(sources, encoder, store, info["max_queries"], info["seed"], progress)
        else:
            data = cached_routing_data(store, info["datasets"])
        build_router(store, router.name, data, {k: info[k] for k in ("datasets", "max_queries", "seed")},
                     **router.options)
        refitted.append(router.name)
    return refitted
