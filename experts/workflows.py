"""The workflows the CLI runs, as library functions: add an expert, build routers, run the paper-style comparison.

Each reuses what is saved (corpus indexes in the cache, experts and routing scores in the router directory),
checks its input before any long work, and leaves ``cli.py`` only options and printing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from eval.data import Dataset, open_dataset
from eval.report import Comparison
from eval.runs import DEFAULT, MULTITASK, ORACLES, ROUTED, SplitRun
from experts.config import ROUTE_ON
from experts.pairs import anchor_texts
from experts.routing import (
    build_routers_together,
    choose_default_router,
    expert_key,
    lexical_key,
    prefix_layer,
    refit_datasets,
    refresh_routers,
    routing_data,
    routing_info,
)
from experts.train import TrainConfig, TrainedExpert, heldout_split, train_expert
from retriever.encoding.encoder import Encoder, load_encoder
from retriever.encoding.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.index.base import IndexConfig
from retriever.index.faiss_index import CorpusIndex
from retriever.ranking.systems import BM25, FUSIONS, hybrid, system_names
from retriever.routers import buildable_kinds, novelty_kinds
from retriever.routers.calibration import check_threshold
from retriever.routers.directory import RouterDirectory, validate_name
from retriever.storage.files import check_fields, read_json

__all__ = [
    "DEFAULT_EXPERT_DATASETS", "DEFAULT_OVERRIDES", "add_expert", "build_routers", "load_overrides",
    "remove_expert", "run_comparison", "train_and_save",
]

logger = logging.getLogger(__name__)

DEFAULT_EXPERT_DATASETS = ("scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l",
                           "squad")  # the shared data's datasets that get an expert in `benchmark`
NO_EXPERT_DATASETS = ("aila2019-statutes",)  # evaluated by default as a domain without an expert
DEFAULT_OVERRIDES = Path(__file__).resolve().parent / "training_overrides.json"


def load_overrides(path: str | os.PathLike | None) -> dict[str, dict]:
    """Per-dataset ``TrainConfig`` fields from a JSON file (``{"datasets": {name: {field: value}}}``)."""
    if path is None:
        return {}
    data = read_json(Path(path), "training overrides file")
    check_fields(data, {"datasets?": dict}, str(path))
    overrides = data.get("datasets", {})
    for name, fields in overrides.items():
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: overrides for {name!r} must be an object, got {fields!r}")
        try:
            TrainConfig.from_fields(fields)  # an unknown field or a bad value fails here, naming it
        except ValueError as err:
            raise ValueError(f"{path}: overrides for {name!r}: {err}") from None
    return overrides


def _check_training_request(name: str, dataset: Dataset, split: str, config: TrainConfig,
                            anchor_sets: Sequence[Dataset]) -> None:
    validate_name(name)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (TrainConfig.from_fields takes a dict), got {config!r}")
    if split == "test":
        raise ValueError("experts are never trained on the test split")
    heldout_split(dataset, sorted(dataset.doc_ids()), split, config)  # an unknown split, too few queries fail here
    if bool(anchor_sets) != (config.anchor_weight > 0):
        raise ValueError(f"an anchor weight > 0 (got {config.anchor_weight}) and anchor datasets (--anchor-dataset) "
                         "go together")
    if dataset.name in {other.name for other in anchor_sets}:
        raise ValueError(f"anchor dataset {dataset.name!r} is the expert's own dataset")


def _check_new(store: RouterDirectory, name: str, overwrite: bool) -> None:
    if name in store.expert_names() and not overwrite:
        raise FileExistsError(f"expert {name!r} already exists in {store.root}; pass --overwrite to replace it")


def train_and_save(store: RouterDirectory, name: str, dataset: Dataset, index: CorpusIndex, encoder: Encoder,
                   config: TrainConfig, split: str = "train", anchor_sets: Sequence[Dataset] = (),
                   overwrite: bool = False, progress: bool = False) -> TrainedExpert:
    """Train expert ``name`` on ``dataset``'s ``split`` against ``index`` (anchored on ``anchor_sets``' texts when
    ``config.anchor_weight > 0``) and save it into the router directory."""
    _check_training_request(name, dataset, split, config, anchor_sets)
    _check_new(store, name, overwrite)
    trained = _train(dataset, index, encoder, config, split, anchor_sets, progress)
    store.save_expert(name, trained.write, trained.meta(), overwrite=overwrite)
    return trained


def _train(dataset, index, encoder, config, split, anchor_sets, progress) -> TrainedExpert:
    """Train (in memory) once the request is checked (``_check_training_request``)."""
    anchors = anchor_texts(anchor_sets, documents=config.anchor_documents) if anchor_sets else []
    return train_expert([(dataset, index)], encoder, config, split, anchors=anchors, progress=progress)


def _opener(data_dir, backend: IndexBackend, encoder: Encoder, index_type: str = "flat", progress: bool = False):
    """``open(name, lexical) -> (dataset, dense index, lexical index or None)``, from the backend (built when
    missing; the lexical one only when asked for)."""

    def open_source(name: str, lexical: bool = True):
        ds = open_dataset(data_dir, name)
        return ds, *backend.ensure(ds, encoder, IndexConfig(index_type=index_type), lexical=lexical,
                                   progress=progress)

    return open_source


def add_expert(router_dir: str | os.PathLike, data_dir, cache_dir, dataset: str, name: str, config: TrainConfig,
               split: str = "train", anchor_datasets: Sequence[str] = (), model: str | None = None,
               index_type: str = "flat", overwrite: bool = False, progress: bool = False,
               backend: IndexBackend | None = None) -> tuple[Path, TrainedExpert, list[str]]:
    """``train-expert``: train one expert, then save it and refit the routers already built in the router
    directory so they can choose it (nothing else is retrained), as one change (``RouterDirectory.
    changing_expert``): if the routers cannot be refitted, the experts are as they were. Everything the refit
    reads (the routers' datasets under ``data_dir``) is checked before training. Returns ``(expert path,
    trained, refitted routers)``."""
    ds = open_dataset(data_dir, dataset)
    anchor_sets = [open_dataset(data_dir, other) for other in dict.fromkeys(anchor_datasets)]  # unknown names fail
    _check_training_request(name, ds, split, config, anchor_sets)  # before any model loads
    index_config = IndexConfig(index_type=index_type)
    encoder = load_encoder(model)
    store = RouterDirectory(router_dir, encoder.info, create=True)
    _check_new(store, name, overwrite)  # before any corpus is encoded
    for other in refit_datasets(store):
        try:
            open_dataset(data_dir, other).qrels("train")
        except ValueError as err:
            raise ValueError(f"the routers in {store.root} were built on dataset {other!r}, which adding an expert "
                             f"refits them on: {err}") from None
    backend = backend or FaissBackend(cache_dir)
    index, _ = backend.ensure(ds, encoder, index_config, progress=progress)
    trained = _train(ds, index, encoder, config, split, anchor_sets, progress)
    with store.changing_expert(name):
        store.save_expert(name, trained.write, trained.meta())
        refitted = []
        if store.built_routers():  # fold the new expert into the routers already built
            routed = store.load_into(MultiExpertEncoder(encoder))
            refitted = refresh_routers(store, routed, _opener(data_dir, backend, encoder, index_type, progress),
                                       progress=progress)
    return store.expert_path(name), trained, refitted


def remove_expert(router_dir: str | os.PathLike, name: str, model: str | None = None) -> list[str]:
    """``experts remove``: remove expert ``name`` and refit the routers built in the router directory without it,
    as one change: if they cannot be refitted (their cached routing data is missing or damaged, say), nothing is
    removed. Returns the refitted routers."""
    store = RouterDirectory(router_dir, load_encoder(model).info)
    store.expert_path(name)  # an unknown name fails here, naming the experts
    try:
        with store.changing_expert(name):
            return refresh_routers(store)
    except ValueError as err:
        raise ValueError(f"expert {name!r} was not removed: the routers in {store.root} cannot be refitted without "
                         f"it: {err}") from None


def _check_routing_settings(max_queries: int, route_on: str) -> None:
    if not isinstance(max_queries, int) or isinstance(max_queries, bool) or max_queries < 1:
        raise ValueError(f"max_queries must be a positive integer, got {max_queries!r}")
    if route_on not in ROUTE_ON:
        raise ValueError(f"unknown routing input {route_on!r}; choose one of {', '.join(ROUTE_ON)}")


def _fit_routers(store: RouterDirectory, kinds: Sequence[str], sources, lexical: dict | None, encoder,
                 max_queries: int, fusion: str, progress: bool, options_for,
                 route_on: str = "embeddings") -> tuple[list, object]:
    """Score, label and fit ``kinds`` on ``sources``, then record the default router; ``(paths, routing data)``.
    ``route_on="embeddings"`` routes on base embeddings (the paper's), ``"prefix"`` on the experts' shared prefix
    (``prefix_layer``; base embeddings where the experts have none)."""
    layer = prefix_layer(store, encoder) if route_on == "prefix" else None
    if route_on == "prefix" and layer is None:
        logger.warning("routing on base embeddings: no expert in %s leaves a shared prefix (an expert adapts every "
                       "layer, or there is none)", store.root)
    data = routing_data(sources, encoder, store, max_queries=max_queries, progress=progress, lexical=lexical,
                        fusion=fusion, layer=layer)
    keys = None if lexical is None else {name: lexical_key(index) for name, index in lexical.items()}
    info = routing_info([ds.name for ds, _ in sources], max_queries, 0, keys, fusion)
    paths = build_routers_together(store, [(kind, data, info, options_for(kind)) for kind in kinds])
    choose_default_router(store, list(kinds))
    return paths, data


def build_routers(router_dir: str | os.PathLike, data_dir, cache_dir, datasets: Sequence[str], kinds: Sequence[str],
                  max_queries: int = 500, pilot_options: dict | None = None, fallback: str | float = "none",
                  novelty: str | float | None = None, unfamiliar: str = "auto", model: str | None = None,
                  index_type: str = "flat", lexical: bool = True, fusion: str = "convex", progress: bool = False,
                  backend: IndexBackend | None = None,
                  route_on: str = "embeddings") -> tuple[list[tuple[Path, str, int, list[str], str]], str]:
    """``build-router``: score every system on ``datasets``' training queries (dense experts, and with ``lexical``
    BM25 and each expert's hybrid), label each query by its best system and fit routers of ``kinds``; the one
    the routing folds favour becomes the directory's default. Returns ``(path, kind, labelled queries, systems,
    what it routes on)`` per router, and the default router. A dataset given twice counts once; every setting is
    checked before any work."""
    unknown = [kind for kind in kinds if kind not in buildable_kinds()]
    if unknown or not kinds:
        raise ValueError(f"unknown router kind(s) {', '.join(map(repr, unknown)) or '(none given)'}; valid: "
                         f"{', '.join(buildable_kinds())}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
    check_threshold("fallback", fallback)
    if novelty is not None:
        check_threshold("novelty", novelty)
    _check_routing_settings(max_queries, route_on)
    opened = [open_dataset(data_dir, name) for name in dict.fromkeys(datasets)]
    for ds in opened:
        ds.qrels("train")
    kinds = list(dict.fromkeys(kinds))
    encoder = MultiExpertEncoder(load_encoder(model))
    store = RouterDirectory(router_dir, encoder.info)
    store.load_into(encoder)
    open_source = _opener(data_dir, backend or FaissBackend(cache_dir), encoder.base, index_type, progress)
    triples = [open_source(ds.name, lexical) for ds in opened]
    lexical_indexes = {ds.name: lex for ds, _, lex in triples} if lexical else None

    def options_for(kind):
        options = dict(pilot_options or {}) if kind == "pilot" else {}
        if novelty is not None and kind in novelty_kinds():  # else build_router's default
            options["novelty"] = novelty
        return {"fallback": fallback, "unfamiliar": unfamiliar, **options}

    paths, data = _fit_routers(store, kinds, [(ds, index) for ds, index, _ in triples], lexical_indexes, encoder,
                               max_queries, fusion, progress, options_for, route_on)
    return [(path, kind, len(data.labels), data.experts, data.space.describe())
            for path, kind in zip(paths, kinds, strict=True)], store.default_router()


def run_comparison(data_dir, router_dir, cache_dir, expert_datasets: Sequence[str] = (),
                   eval_datasets: Sequence[str] = (), model: str | None = None,
                   overrides: dict[str, dict] | None = None, max_queries: int = 500, multitask: bool = True,
                   index_type: str = "flat", progress: bool = False, backend: IndexBackend | None = None,
                   route_on: str = "embeddings") -> Comparison:
    """``benchmark``: train the experts that are missing (one per expert dataset, anchored on the others, plus the
    multi-task baseline), build every router, and evaluate every system on every eval dataset's test split.
    Defaults: the shared data's expert datasets, evaluated together with the no-expert ones present."""
    from eval.data import resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    _check_routing_settings(max_queries, route_on)
    index_config = IndexConfig(index_type=index_type)
    for fields in (overrides or {}).values():
        TrainConfig.from_fields(fields)  # an unknown field or a bad value fails here, before any training
    expert_datasets = list(dict.fromkeys(expert_datasets or DEFAULT_EXPERT_DATASETS))  # twice counts once
    eval_datasets = list(dict.fromkeys(eval_datasets or [*expert_datasets,
                                                         *[d for d in NO_EXPERT_DATASETS if (data_dir / d).is_dir()]]))
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    opened = {name: open_dataset(data_dir, name) for name in dict.fromkeys([*expert_datasets, *eval_datasets])}
    for name in eval_datasets:
        opened[name].qrels("test")
    encoder = MultiExpertEncoder(load_encoder(model))
    store = RouterDirectory(router_dir, encoder.info, create=True)
    backend = backend or FaissBackend(cache_dir)
    indexes, lexical = {}, {}
    for name, ds in opened.items():
        t = time.perf_counter()
        indexes[name], lexical[name] = backend.ensure(ds, encoder.base, index_config, lexical=True,
                                                      progress=progress)
        seconds[f"index:{name}"] = round(time.perf_counter() - t, 1)

    overrides = overrides or {}
    for name in expert_datasets:
        if name not in store.expert_names():
            config = TrainConfig.from_fields(overrides.get(name, {}))
            others = [opened[other] for other in expert_datasets if other != name]
            if not others:  # a single expert dataset: no other domain to anchor on
                config = dataclasses.replace(config, anchor_weight=0.0, anchor_documents=0)
            anchor_sets = others if config.anchor_weight > 0 else []
            trained = train_and_save(store, name, opened[name], indexes[name], encoder.base, config,
                                     anchor_sets=anchor_sets, progress=progress)
            seconds[f"train:{name}"] = round(trained.seconds, 1)
    if multitask and MULTITASK not in store.expert_names():
        sources = [(opened[name], indexes[name]) for name in expert_datasets]
        trained = train_expert(sources, encoder.base, TrainConfig.from_fields(overrides.get(MULTITASK, {})),
                               progress=progress)
        store.save_expert(MULTITASK, trained.write, trained.meta())
        seconds[f"train:{MULTITASK}"] = round(trained.seconds, 1)
    store.load_into(encoder)

    t = time.perf_counter()
    sources = [(opened[name], indexes[name]) for name in expert_datasets]
    _fit_routers(store, ROUTED, sources, {name: lexical[name] for name in expert_datasets}, encoder, max_queries,
                 "convex", progress, lambda kind: {}, route_on)
    routers = {kind: store.load_router(kind) for kind in ROUTED}
    default = store.default_router()
    seconds["build-routers"] = round(time.perf_counter() - t, 1)

    own = store.domain_experts()
    candidates = system_names(store.candidates())
    experts = [own[d] for d in expert_datasets if d in own]
    systems = [BASE_EXPERT, *([MULTITASK] if MULTITASK in store.expert_names() else []), BM25, hybrid(BASE_EXPERT),
               *ROUTED, DEFAULT, *ORACLES, *[f"expert:{e}" for e in experts], *[hybrid(e) for e in experts]]
    keys = {name: expert_key(store, name) for name in encoder.names}
    fusion = store.load_systems()
    results = []
    t = time.perf_counter()
    for name in eval_datasets:
        run = SplitRun(opened[name], "test", encoder, indexes[name], routers, candidates,
                       vector_cache=Path(cache_dir) / "query-vectors", expert_keys=keys, lexical=lexical[name],
                       systems=fusion, aliases={DEFAULT: default})
        results += [run.run(system) for system in systems]
    seconds["evaluate"] = round(time.perf_counter() - t, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    return Comparison(results, list(expert_datasets), list(eval_datasets), own, seconds, default,
                      {kind: routers[kind].info.get("fold_gain") for kind in ROUTED}, fusion.to_json())
