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
from eval.runs import MULTITASK, ORACLES, ROUTED, SplitRun
from experts.pairs import anchor_texts
from experts.routing import build_router, expert_key, refresh_routers, routing_data
from experts.train import TrainConfig, TrainedExpert, train_expert
from retriever.artifacts import check_fields, read_json
from retriever.encoder import Encoder, load_encoder
from retriever.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.index import CorpusIndex, IndexConfig, ensure_index
from retriever.router_dir import RouterDirectory, validate_name
from retriever.routers import load_router, novelty_kinds

__all__ = [
    "DEFAULT_EXPERT_DATASETS", "DEFAULT_OVERRIDES", "add_expert", "build_routers", "load_overrides",
    "run_comparison", "train_and_save",
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


def _check_training_request(store: RouterDirectory | None, name: str, dataset: Dataset, split: str,
                            config: TrainConfig, anchor_sets: Sequence[Dataset], overwrite: bool) -> None:
    validate_name(name)
    if split == "test":
        raise ValueError("experts are never trained on the test split")
    dataset.qrels(split)  # an unknown split fails here, naming the available ones
    if bool(anchor_sets) != (config.anchor_weight > 0):
        raise ValueError(f"an anchor weight > 0 (got {config.anchor_weight}) and anchor datasets (--anchor-dataset) "
                         "go together")
    if dataset.name in {other.name for other in anchor_sets}:
        raise ValueError(f"anchor dataset {dataset.name!r} is the expert's own dataset")
    if store is not None and name in store.names() and not overwrite:
        raise FileExistsError(f"expert {name!r} already exists in {store.root}; pass --overwrite to replace it")


def train_and_save(store: RouterDirectory, name: str, dataset: Dataset, index: CorpusIndex, encoder: Encoder,
                   config: TrainConfig, split: str = "train", anchor_sets: Sequence[Dataset] = (),
                   overwrite: bool = False, progress: bool = False) -> TrainedExpert:
    """Train expert ``name`` on ``dataset``'s ``split`` against ``index`` (anchored on ``anchor_sets``' texts when
    ``config.anchor_weight > 0``) and save it into the router directory."""
    _check_training_request(store, name, dataset, split, config, anchor_sets, overwrite)
    anchors = anchor_texts(anchor_sets, documents=config.anchor_documents) if anchor_sets else []
    trained = train_expert([(dataset, index)], encoder, config, split, anchors=anchors, progress=progress)
    store.save(name, trained.write, trained.meta(), overwrite=overwrite)
    return trained


def add_expert(router_dir: str | os.PathLike, data_dir, cache_dir, dataset: str, name: str, config: TrainConfig,
               split: str = "train", anchor_datasets: Sequence[str] = (), model: str | None = None,
               index_type: str = "flat", overwrite: bool = False, progress: bool = False
               ) -> tuple[Path, TrainedExpert, list[str]]:
    """``train-expert``: train and save one expert, then refit the routers already built in the router directory
    so they can choose it (nothing else is retrained). Returns ``(expert path, trained, refitted routers)``."""
    ds = open_dataset(data_dir, dataset)
    anchor_sets = [open_dataset(data_dir, other) for other in anchor_datasets]  # unknown names fail here
    _check_training_request(None, name, ds, split, config, anchor_sets, overwrite)  # before any model loads
    encoder = load_encoder(model)
    store = RouterDirectory(router_dir, encoder.info, create=True)
    _check_training_request(store, name, ds, split, config, anchor_sets, overwrite)  # before any corpus is encoded
    index = ensure_index(ds, encoder, cache_dir, IndexConfig(index_type=index_type), progress=progress)
    trained = train_and_save(store, name, ds, index, encoder, config, split, anchor_sets, overwrite, progress)
    refitted = []
    if store.built_routers():  # fold the new expert into the routers already built

        def open_source(dataset_name):
            other = open_dataset(data_dir, dataset_name)
            return other, ensure_index(other, encoder, cache_dir, IndexConfig(), progress=progress)

        routed = store.load_into(MultiExpertEncoder(encoder))
        refitted = refresh_routers(store, routed, open_source, progress=progress)
    return store.path(name), trained, refitted


def build_routers(router_dir: str | os.PathLike, data_dir, cache_dir, datasets: Sequence[str], kinds: Sequence[str],
                  max_queries: int = 500, pilot_options: dict | None = None, fallback: str | float = "none",
                  novelty: str | float | None = None, model: str | None = None, index_type: str = "flat",
                  progress: bool = False) -> list[tuple[Path, str, int, list[str]]]:
    """``build-router``: score every expert on ``datasets``' training queries, label each query by its best expert
    and fit routers of ``kinds``. Returns ``(path, kind, labelled queries, experts)`` per router."""
    opened = [open_dataset(data_dir, name) for name in datasets]
    for ds in opened:
        ds.qrels("train")
    encoder = MultiExpertEncoder(load_encoder(model))
    store = RouterDirectory(router_dir, encoder.info)
    store.load_into(encoder)
    config = IndexConfig(index_type=index_type)
    sources = [(ds, ensure_index(ds, encoder.base, cache_dir, config, progress=progress)) for ds in opened]
    data = routing_data(sources, encoder, store, max_queries=max_queries, progress=progress)
    info = {"datasets": list(datasets), "max_queries": max_queries, "seed": 0}
    built = []
    for kind in kinds:
        options = dict(pilot_options or {}) if kind == "pilot" else {}
        if novelty is not None and kind in novelty_kinds():  # else build_router's default
            options["novelty"] = novelty
        path = build_router(store, kind, data, info, fallback=fallback, **options)
        built.append((path, kind, len(data.labels), data.experts))
    return built


def run_comparison(data_dir, router_dir, cache_dir, expert_datasets: Sequence[str] = (),
                   eval_datasets: Sequence[str] = (), model: str | None = None,
                   overrides: dict[str, dict] | None = None, max_queries: int = 500, multitask: bool = True,
                   index_type: str = "flat", progress: bool = False) -> Comparison:
    """``benchmark``: train the experts that are missing (one per expert dataset, anchored on the others, plus the
    multi-task baseline), build every router, and evaluate every system on every eval dataset's test split.
    Defaults: the shared data's expert datasets, evaluated together with the no-expert ones present."""
    from eval.data import resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    expert_datasets = list(expert_datasets or DEFAULT_EXPERT_DATASETS)
    eval_datasets = list(eval_datasets or [*expert_datasets,
                                           *[d for d in NO_EXPERT_DATASETS if (data_dir / d).is_dir()]])
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    opened = {name: open_dataset(data_dir, name) for name in dict.fromkeys([*expert_datasets, *eval_datasets])}
    for name in eval_datasets:
        opened[name].qrels("test")
    encoder = MultiExpertEncoder(load_encoder(model))
    store = RouterDirectory(router_dir, encoder.info, create=True)
    indexes = {}
    for name, ds in opened.items():
        t = time.perf_counter()
        indexes[name] = ensure_index(ds, encoder.base, cache_dir, IndexConfig(index_type=index_type),
                                     progress=progress)
        seconds[f"index:{name}"] = round(time.perf_counter() - t, 1)

    overrides = overrides or {}
    for name in expert_datasets:
        if name not in store.names():
            config = TrainConfig(**overrides.get(name, {}))
            others = [opened[other] for other in expert_datasets if other != name]
            if not others:  # a single expert dataset: no other domain to anchor on
                config = dataclasses.replace(config, anchor_weight=0.0, anchor_documents=0)
            anchor_sets = others if config.anchor_weight > 0 else []
            trained = train_and_save(store, name, opened[name], indexes[name], encoder.base, config,
                                     anchor_sets=anchor_sets, progress=progress)
            seconds[f"train:{name}"] = round(trained.seconds, 1)
    if multitask and MULTITASK not in store.names():
        sources = [(opened[name], indexes[name]) for name in expert_datasets]
        trained = train_expert(sources, encoder.base, TrainConfig(**overrides.get(MULTITASK, {})), progress=progress)
        store.save(MULTITASK, trained.write, trained.meta())
        seconds[f"train:{MULTITASK}"] = round(trained.seconds, 1)
    store.load_into(encoder)

    t = time.perf_counter()
    sources = [(opened[name], indexes[name]) for name in expert_datasets]
    data = routing_data(sources, encoder, store, max_queries=max_queries, progress=progress)
    info = {"datasets": list(expert_datasets), "max_queries": max_queries, "seed": 0}
    routers = {kind: load_router(build_router(store, kind, data, info)) for kind in ROUTED}
    seconds["build-routers"] = round(time.perf_counter() - t, 1)

    own = store.domain_experts()
    candidates = store.candidates()
    systems = [BASE_EXPERT, *([MULTITASK] if MULTITASK in store.names() else []), *ROUTED, *ORACLES,
               *[f"expert:{own[d]}" for d in expert_datasets if d in own]]
    keys = {name: expert_key(store, name) for name in encoder.names}
    results = []
    t = time.perf_counter()
    for name in eval_datasets:
        run = SplitRun(opened[name], "test", encoder, indexes[name], routers, candidates,
                       vector_cache=Path(cache_dir) / "query-vectors", expert_keys=keys)
        results += [run.run(system) for system in systems]
    seconds["evaluate"] = round(time.perf_counter() - t, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    return Comparison(results, list(expert_datasets), list(eval_datasets), own, seconds)
