"""``routerretriever build-router``: score every system on training queries, label each query by its best
system and fit routers; the one the routing folds favour becomes the router directory's default."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from eval.data import DataError, open_dataset
from experts.routing import (
    build_routers_together,
    choose_default_router,
    index_sources,
    lexical_key,
    prefix_layer,
    refit_sources,
    routing_data,
    routing_info,
    unlabelled_names,
)
from experts.workflows.common import check_routing_settings, named_index, opener
from retriever.encoding.encoder import load_encoder
from retriever.encoding.expert_encoder import MultiExpertEncoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.ranking.systems import FUSIONS
from retriever.routers import buildable_kinds, novelty_kinds
from retriever.routers.calibration import check_threshold
from retriever.routers.directory import RouterDirectory

__all__ = ["build_routers", "fit_routers"]

logger = logging.getLogger(__name__)


def fit_routers(store: RouterDirectory, kinds: Sequence[str], sources, lexical: dict | None, encoder,
                 max_queries: int, fusion: str, progress: bool, options_for,
                 route_on: str = "embeddings") -> tuple[list, object]:
    """Score, label and fit ``kinds`` on ``sources``, then record the default router; ``(paths, routing data)``.
    ``route_on="embeddings"`` routes on base embeddings (the paper's), ``"prefix"`` on the experts' shared prefix
    (``prefix_layer``; base embeddings where the experts have none). Sources whose training split is pseudo-queries
    are recorded as such, so that refitting draws them again."""
    layer = prefix_layer(store, encoder) if route_on == "prefix" else None
    if route_on == "prefix" and layer is None:
        logger.warning("routing on base embeddings: no expert in %s leaves a shared prefix (an expert adapts every "
                       "layer, or there is none)", store.root)
    data = routing_data(sources, encoder, store, max_queries=max_queries, progress=progress, lexical=lexical,
                        fusion=fusion, layer=layer)
    keys = None if lexical is None else {name: lexical_key(index) for name, index in lexical.items()}
    info = routing_info([ds.name for ds, _ in sources], max_queries, 0, keys, fusion, unlabelled_names(sources),
                        index_sources(sources))
    paths = build_routers_together(store, [(kind, data, info, options_for(kind)) for kind in kinds])
    choose_default_router(store, list(kinds))
    return paths, data


def build_routers(router_dir: str | os.PathLike, data_dir, cache_dir, datasets: Sequence[str], kinds: Sequence[str],
                  max_queries: int = 500, pilot_options: dict | None = None, fallback: str | float = "none",
                  novelty: str | float | None = None, unfamiliar: str = "auto", model: str | None = None,
                  index_type: str = "flat", lexical: bool = True, fusion: str = "convex", progress: bool = False,
                  backend: IndexBackend | None = None, route_on: str = "embeddings",
                  unlabelled: Sequence[str] = (), unlabelled_indexes: Sequence = ()
                  ) -> tuple[list[tuple[Path, str, int, list[str], str]], str]:
    """``build-router``: score every system on ``datasets``' training queries (dense experts, and with ``lexical``
    BM25 and each expert's hybrid), label each query by its best system and fit routers of ``kinds``; the one
    the routing folds favour becomes the directory's default. Datasets in ``unlabelled`` need no judgments: they
    are scored on ``max_queries`` pseudo-queries drawn from their corpus (``experts.pseudo.routing_queries``), and so
    are the documents of each named index in ``unlabelled_indexes`` (a collection indexed with ``index --corpus``,
    by its directory or Milvus collection; recorded so that refitting reopens it). Returns ``(path, kind, labelled
    queries, systems, what it routes on)`` per router, and the default router. A dataset given twice counts once;
    every setting is checked before any work."""
    unknown = [kind for kind in kinds if kind not in buildable_kinds()]
    if unknown or not kinds:
        raise ValueError(f"unknown router kind(s) {', '.join(map(repr, unknown)) or '(none given)'}; valid: "
                         f"{', '.join(buildable_kinds())}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
    check_threshold("fallback", fallback)
    if novelty is not None:
        check_threshold("novelty", novelty)
    check_routing_settings(max_queries, route_on)
    datasets, unlabelled = list(dict.fromkeys(datasets)), list(dict.fromkeys(unlabelled))
    both = [name for name in unlabelled if name in datasets]
    if both or not datasets + unlabelled + list(unlabelled_indexes):
        raise ValueError(f"dataset(s) {', '.join(map(repr, both))} given both with judgments (--dataset) and without "
                         "(--unlabelled-dataset)" if both else "no dataset to fit routers on: give --dataset, "
                         "--unlabelled-dataset or --unlabelled-index")
    for name in datasets:
        _check_judged(data_dir, name)
    for name in unlabelled:
        open_dataset(data_dir, name, judged=False)
    backend = backend or FaissBackend(cache_dir)
    indexes = _index_names(backend, unlabelled_indexes, datasets + unlabelled)
    if (unlabelled or indexes) and max_queries < 2:
        raise ValueError(f"max_queries must be at least 2 to draw pseudo-queries, got {max_queries}")
    kinds = list(dict.fromkeys(kinds))
    encoder = MultiExpertEncoder(load_encoder(model))
    store = RouterDirectory(router_dir, encoder.info)
    _check_names(store, indexes, datasets + unlabelled)
    store.load_into(encoder)
    open_source = opener(data_dir, backend, encoder.base, index_type, progress)
    triples = [open_source(name, lexical) for name in datasets]
    triples += [open_source(name, lexical, max_queries) for name in unlabelled]
    triples += [open_source(name, lexical, max_queries, record) for name, record in indexes.items()]
    lexical_indexes = {ds.name: lex for ds, _, lex in triples} if lexical else None

    def options_for(kind):
        options = dict(pilot_options or {}) if kind == "pilot" else {}
        if novelty is not None and kind in novelty_kinds():  # else build_router's default
            options["novelty"] = novelty
        return {"fallback": fallback, "unfamiliar": unfamiliar, **options}

    paths, data = fit_routers(store, kinds, [(ds, index) for ds, index, _ in triples], lexical_indexes, encoder,
                               max_queries, fusion, progress, options_for, route_on)
    return [(path, kind, len(data.labels), data.systems, data.space.describe())
            for path, kind in zip(paths, kinds, strict=True)], store.default_router()


def _index_names(backend: IndexBackend, targets: Sequence, datasets: list[str]) -> dict[str, dict]:
    """``{name: record}`` of the named indexes ``targets`` (``named_index``: a missing one fails before any model
    loads; one given twice, in any spelling, counts once); a name must differ from every dataset's and every other
    index's."""
    indexes = {}
    for target in targets:
        name, record = named_index(backend, target)
        if name in datasets or indexes.get(name, record) != record:
            raise ValueError(f"index {target} is named {name!r}, as is " + (
                f"dataset {name!r}" if name in datasets else f"index {indexes[name]['target']}") +
                ": routing data is kept by name; rename one")
        indexes[name] = record
    return indexes


def _check_names(store: RouterDirectory, indexes: dict[str, dict], datasets: list[str]) -> None:
    """Each name names one source across the router directory: an index may not take the name of a dataset (or of
    another index) the routers already built there were fitted on, nor a dataset an index's."""
    for (name, _), (_, record) in refit_sources(store).items():
        now = indexes.get(name, "dataset" if name in datasets else None)
        if now is not None and now != (record or "dataset"):
            was = f"index {record['target']}" if record else f"dataset {name!r}"
            raise ValueError(f"{name!r} names {was} in the routers already built in {store.root}; rename the index "
                             "(routing data is kept by name)")


def _check_judged(data_dir, name: str) -> None:
    """A dataset routers are fitted on with judgments has a training split; if it has only a corpus, the error says
    how to fit on it without judgments."""
    if "train" not in open_dataset(data_dir, name, judged=False).splits:  # not a dataset at all: that error, as is
        raise DataError(f"dataset {name!r} has no training judgments (qrels/train.tsv); to fit routers on it without "
                        "judgments (pseudo-queries from its corpus), give it as --unlabelled-dataset")
    open_dataset(data_dir, name).qrels("train")
