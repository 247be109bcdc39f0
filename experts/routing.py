"""Building routers from the routing data (``experts.routing_cache``): fitting, saving, refitting for the current
experts, and choosing the directory's default router.

A router is fitted on the routing data with ``retriever.routers.fit_router`` (thresholds and default system
calibrated on the routing folds) and saved in the router directory with what it was built from
(``routing_info``), so that ``refresh_routers`` can refit it the same way after experts are added or removed.
The routing-data names below are re-exported from ``experts.routing_cache`` for existing callers.
"""

from __future__ import annotations

from pathlib import Path

from experts.routing_cache import (
    HYBRID_WEIGHTS,
    SPLIT,
    cached_routing_data,
    calibrate_hybrids,
    expert_key,
    hybrid_label,
    index_sources,
    lexical_key,
    prefix_file,
    prefix_layer,
    routing_data,
    routing_sample,
    score_experts,
    unlabelled_names,
)
from retriever.encoding.expert_encoder import MultiExpertEncoder
from retriever.routers import CALIBRATED_OPTIONS, ROUTERS, Router, RoutingData, fit_router, novelty_kinds
from retriever.routers.directory import RouterDirectory
from retriever.storage.files import check_fields

__all__ = [
    "CALIBRATED_OPTIONS", "HYBRID_WEIGHTS", "SPLIT", "best_router", "build_router", "build_routers_together",
    "cached_routing_data", "calibrate_hybrids", "choose_default_router", "expert_key", "hybrid_label", "index_sources",
    "lexical_key", "prefix_file", "prefix_layer", "refit_sources", "refresh_routers", "routing_data",
    "routing_info", "routing_sample", "score_experts", "unlabelled_names",
]

NOVELTY = "auto"  # the default novelty fallback of routers that keep reference vectors (build_router)


def build_router(store: RouterDirectory, kind: str, data: RoutingData, info: dict, **options) -> Path:
    """Fit router ``kind`` (options as ``retriever.routers.fit_router`` takes them) and save it in the store.
    Unless told otherwise, a router that keeps reference vectors gets ``novelty="auto"``: a query unlike every
    training domain goes to the base model, below a similarity calibrated on the training data's folds."""
    return build_routers_together(store, [(kind, data, info, options)])[0]


def build_routers_together(store: RouterDirectory, jobs: list[tuple[str, RoutingData, dict, dict]]) -> list[Path]:
    """``build_router`` for each ``(kind, data, info, options)``, all fitted before any is saved: a router that
    cannot be fitted leaves every built router as it was."""
    fitted = []
    for kind, data, info, options in jobs:
        options = dict(options)
        if kind in novelty_kinds():
            options.setdefault("novelty", NOVELTY)
        for calibrated in CALIBRATED_OPTIONS:  # refitting: "auto" is calibrated again
            options.pop(calibrated, None)
        router = fit_router(kind, data, **options)
        counts = {e: data.labels.count(e) for e in data.systems}
        extra = {} if router.fold_gain is None else {"fold_gain": router.fold_gain}
        if data.fusion is not None:  # the hybrids' fusion its labels were made with: saved with it
            extra["systems"] = data.fusion.to_json()
        fitted.append((router, data, {**info, "label_counts": counts, **extra}))
    paths = []
    for router, data, info in fitted:
        if data.fusion is not None:  # and as the directory's latest, for evaluating hybrids without a router
            store.save_fusion(data.fusion)
        paths.append(store.save_router(router, info))
    return paths


def choose_default_router(store: RouterDirectory, kinds: list[str] | None = None) -> str | None:
    """Record as the directory's default the router of ``kinds`` (those just built together on the same routing
    data; default: every built one) with the best mean gain on the routing folds (training queries only; ties:
    registry order, the pilot first). Returns it, or None if none has fold gains."""
    kinds = store.built_routers() if kinds is None else kinds
    best = best_router({kind: store.load_router(kind).info.get("fold_gain", {}).get("mean") for kind in kinds})
    if best is not None:
        store.set_default_router(best)
    return best


def best_router(gains: dict[str, float | None]) -> str | None:
    """The router kind with the best mean gain on the routing folds (ties: registry order, the pilot first), or
    None if none has one."""
    ranked = [kind for kind in ROUTERS if isinstance(gains.get(kind), int | float)]
    return max(ranked, key=lambda kind: (gains[kind], -ranked.index(kind))) if ranked else None


def refit_sources(store: RouterDirectory) -> dict[tuple[str, str | None], tuple[bool, dict | None]]:
    """What refitting the routers built in ``store`` reads, each source once: ``{(name, its index's target or None):
    (judged, index record or None)}`` — a dataset's training queries and corpus (``judged`` False: fitted on its
    pseudo-queries, its corpus only), or a named index's documents (``info.indexes``), each router's record
    checked. A name two routers use for different sources appears twice, so neither shadows the other."""
    sources = {}
    for kind in store.built_routers():
        info = _built(store, kind).info
        for name in info["datasets"]:
            index = info.get("indexes", {}).get(name)
            sources[name, None if index is None else index["target"]] = (name not in info.get("unlabelled", []),
                                                                         index)
    return sources


def _built(store: RouterDirectory, kind: str) -> Router:
    """Built router ``kind``, its record of the data it was fitted on (``routing_info``) checked."""
    router = store.load_router(kind)
    check_fields(router.info, {"datasets": list, "max_queries": int, "seed": int, "lexical_keys?": dict,
                               "fusion?": str, "unlabelled?": list, "indexes?": dict},
                 f"{store.router_path(kind) / 'routing.json'} info")
    return router


def refresh_routers(store: RouterDirectory, encoder: MultiExpertEncoder | None = None, open_source=None,
                    progress: bool = False) -> list[str]:
    """Refit every saved router for the current experts, without retraining any expert; every router's data is
    gathered and every router fitted before any is saved, so a failure changes none.

    After a removal nothing is encoded (the remaining experts' scores are cached). After an addition, pass
    ``encoder`` (with the new expert loaded) and ``open_source(dataset_name, lexical) -> (dataset, index, lexical
    index or None)`` (``experts.workflows.common.opener``; for a dataset the routers were fitted on without
    judgments it is called with a third argument, how many pseudo-queries to draw, and a fourth, the record of the
    named index it is, or None) so the new expert's scores can be computed. Returns the names of the routers refitted.
    """
    jobs = []
    for kind in store.built_routers():
        router = _built(store, kind)
        info = router.info
        fusion = info.get("fusion", "convex")
        keys = info.get("lexical_keys")
        # a prefix router follows the current experts' prefix when it can encode (after an addition); after a
        # removal nothing is encoded and its layer stays (still exact: experts resume from their own layer)
        layer = None if router.space.layer is None else prefix_layer(store, encoder) if open_source is not None \
            else router.space.layer
        unlabelled = info.get("unlabelled", [])
        if open_source is not None:
            indexes = info.get("indexes", {})
            opened = [open_source(name, keys is not None, info["max_queries"], indexes.get(name)) if name in unlabelled
                      else open_source(name, keys is not None) for name in info["datasets"]]
            lexical = {ds.name: lex for ds, _, lex in opened} if keys is not None else None
            data = routing_data([(ds, index) for ds, index, _ in opened], encoder, store, info["max_queries"],
                                info["seed"], progress, lexical, fusion, layer)
            keys = None if lexical is None else {name: lexical_key(lex) for name, lex in lexical.items()}
        else:
            data = cached_routing_data(store, info["datasets"], keys, fusion, layer, unlabelled)
        jobs.append((router.name, data, routing_info(info["datasets"], info["max_queries"], info["seed"], keys,
                                                     fusion, unlabelled, info.get("indexes")), router.options))
    build_routers_together(store, jobs)
    if jobs:
        choose_default_router(store)
    return [kind for kind, *_ in jobs]


def routing_info(datasets: list[str], max_queries: int, seed: int, lexical_keys: dict[str, str] | None = None,
                 fusion: str = "convex", unlabelled: list[str] = (), indexes: dict[str, dict] | None = None) -> dict:
    """What a built router records of the data it was fitted on, so that it can be refitted the same way
    (``unlabelled``: the datasets fitted on pseudo-queries; ``indexes``: those that are named indexes, with what
    reopens them, ``experts.workflows.common.named_index``; each recorded when there are any)."""
    info = {"datasets": list(datasets), "max_queries": max_queries, "seed": seed}
    if unlabelled:
        info["unlabelled"] = list(unlabelled)
    if indexes:
        info["indexes"] = dict(indexes)
    if lexical_keys is not None:
        info.update(lexical_keys=dict(lexical_keys), fusion=fusion)
    return info
