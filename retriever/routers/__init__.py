"""Routers: base query vectors in, per-expert weights out. One interface, looked up by name in ``ROUTERS``.

- ``pilot``      — the paper's pilot-embedding library: each pilot is the base-encoder centroid of a group of
                   training queries that one expert answered best; a query goes to the expert with the largest
                   kernel density of its pilots, weighted by group size (``aggregate="weighted"``: the mean
                   similarity weighted by group size; ``"mean"``: the paper's unweighted mean; ``"max"``:
                   nearest pilot; ``clusters > 1``: k-means centroids per group).
- ``classifier`` — multinomial logistic regression on base query vectors, same best-expert labels.
- ``dataset``    — the nearest of at most ``per_dataset`` training queries decides, by its dataset's best system
                   (its own expert without BM25/hybrids).
- ``fixed``      — always one expert (``base`` is the base model).

A router is fitted from ``RoutingData`` (training queries' base vectors, their best expert, their dataset) and
saved as JSON + ``.npy`` under ``<router dir>/routers/<name>/`` (no pickle; sklearn is used only to fit).

Layout (peft's shape: one module per method, registered by name): ``base`` — the ``Router`` interface,
``Routing``, ``RoutingData``, the registry and ``load_router``; one module per router, each registering itself
(``@register_router``); ``calibration`` — the routing folds and the thresholds fitted on them; ``directory`` —
``RouterDirectory``, the one owner of a router directory's layout (experts, built routers, routing-data
caches); ``settings`` — the routers' settings as frozen dataclasses (each kind's options, the fallback
requests, the calibrated values) and the enums of their closed sets. Adding a router is one new module here:
every module of this package but those four is imported below, so it registers itself. Tested in
``tests/test_routers.py`` (one contract test every registered router passes).
"""

import importlib
import pkgutil

from retriever.routers.base import (
    BASE,
    ROUTERS,
    Router,
    Routing,
    RoutingData,
    RoutingSpace,
    best_expert,
    buildable_kinds,
    load_router,
    novelty_kinds,
    register_router,
)
from retriever.routers.calibration import (
    FALLBACKS,
    SIMILARITIES,
    THRESHOLDS,
    UNFAMILIAR_POLICIES,
    best_threshold,
    fit_router,
    fold_gains,
    fold_routings,
    fold_score,
    in_domain_folds,
    without_expert,
)
from retriever.routers.settings import (
    CALIBRATED_OPTIONS,
    Calibration,
    FallbackRequests,
    RouterOptions,
    ThresholdRequest,
    UnfamiliarPolicy,
)

_SUPPORT = {"base", "calibration", "directory", "settings"}  # not routers: interface, folds, directory, settings
for _module in pkgutil.iter_modules(__path__):  # each router module registers its router on import
    if _module.name not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module.name}")

from retriever.routers.fixed import FixedRouter  # noqa: E402  (the one router callers build by hand)

__all__ = [
    "BASE",
    "CALIBRATED_OPTIONS",
    "Calibration",
    "FALLBACKS",
    "FallbackRequests",
    "ROUTERS",
    "FixedRouter",
    "Router",
    "Routing",
    "RoutingSpace",
    "RoutingData",
    "RouterOptions",
    "SIMILARITIES",
    "THRESHOLDS",
    "ThresholdRequest",
    "UNFAMILIAR_POLICIES",
    "UnfamiliarPolicy",
    "best_expert",
    "best_threshold",
    "buildable_kinds",
    "fit_router",
    "fold_gains",
    "fold_routings",
    "fold_score",
    "in_domain_folds",
    "load_router",
    "novelty_kinds",
    "register_router",
    "without_expert",
]
