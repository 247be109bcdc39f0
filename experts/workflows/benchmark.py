"""``routerretriever benchmark``: the paper-style comparison. Train the experts that are missing, build every
router, evaluate every system on every dataset's test split, and write the results JSON, tables and plot."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.data import open_dataset
from eval.report import Comparison, write_report
from eval.runs import DEFAULT, MULTITASK, ORACLES, ROUTED, SplitRun, results_json, write_results_json
from experts.pseudo import routing_queries
from experts.routing import expert_key
from experts.train import TrainConfig, train_expert
from experts.workflows.common import check_routing_settings
from experts.workflows.expert_store import train_and_save
from experts.workflows.routers import fit_routers
from experts.workflows.unlabelled import PSEUDO_QUERIES, corpus_pseudo, pseudo_anchors, refusal, train_checked
from retriever.encoding.encoder import load_encoder
from retriever.encoding.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.index.base import IndexConfig
from retriever.ranking.systems import BM25, hybrid, system_names
from retriever.routers.directory import RouterDirectory
from retriever.storage.cache import default_cache_dir
from retriever.storage.files import check_fields, read_json

__all__ = [
    "DEFAULT_EXPERT_DATASETS", "DEFAULT_OVERRIDES", "NO_EXPERT_DATASETS", "benchmark_results", "load_overrides",
    "run_benchmark", "run_comparison",
]

DEFAULT_EXPERT_DATASETS = ("scifact", "nfcorpus", "arguana-native", "feedbackqa", "perspectrum", "pubmedqa-l",
                           "squad")  # the shared data's datasets that get an expert in `benchmark`
NO_EXPERT_DATASETS = ("aila2019-statutes",)  # evaluated by default as a domain without an expert
logger = logging.getLogger(__name__)

DEFAULT_OVERRIDES = Path(__file__).resolve().parent.parent / "training_overrides.json"


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


@dataclass
class _Corpora:
    """Every dataset of a comparison, opened, with its dense and lexical index."""

    opened: dict
    indexes: dict = dataclasses.field(default_factory=dict)
    lexical: dict = dataclasses.field(default_factory=dict)

    def sources(self, names: Sequence[str]) -> list:
        return [(self.opened[name], self.indexes[name]) for name in names]


def _check_comparison(max_queries: int, route_on: str, index_type: str, overrides: dict | None) -> IndexConfig:
    """Every setting, before any work."""
    check_routing_settings(max_queries, route_on)
    index_config = IndexConfig(index_type=index_type)
    for fields in (overrides or {}).values():
        TrainConfig.from_fields(fields)  # an unknown field or a bad value fails here, before any training
    return index_config


def _index_all(corpora: _Corpora, backend: IndexBackend, encoder, index_config: IndexConfig, progress: bool,
               seconds: dict) -> None:
    for name, ds in corpora.opened.items():
        t = time.perf_counter()
        corpora.indexes[name], corpora.lexical[name] = backend.ensure(ds, encoder, index_config, lexical=True,
                                                                      progress=progress)
        seconds[f"index:{name}"] = round(time.perf_counter() - t, 1)


def _train_missing(store: RouterDirectory, corpora: _Corpora, expert_datasets: list[str], encoder, overrides: dict,
                   multitask: bool, progress: bool, seconds: dict, unlabelled: bool = False) -> dict[str, dict]:
    """One expert per expert dataset not in the store yet (anchored on the others), then the multi-task one.
    ``unlabelled``: each from pseudo-queries of its corpus, saved only if it passes the self-check. Returns the
    self-check records of the experts it refused, by dataset."""
    refused = {}
    for name in expert_datasets:
        if name in store.expert_names():
            check = store.expert_info(name).get("unlabelled", {}).get("self_check", {}) if unlabelled else {}
            if check and "interval" not in check:
                logger.warning("unlabelled expert %r was kept by the self-check before 2026-12-05 (the slice "
                               "training selected on); remove it to train and check it again", name)
        else:
            config = TrainConfig.from_fields(overrides.get(name, {}))
            others = [corpora.opened[other] for other in expert_datasets if other != name]
            if not others:  # a single expert dataset: no other domain to anchor on
                config = dataclasses.replace(config, anchor_weight=0.0, anchor_documents=0)
            anchor_sets = others if config.anchor_weight > 0 else []
            if unlabelled:
                pseudo, check_queries = corpus_pseudo(corpora.opened[name], PSEUDO_QUERIES, config.seed)
                trained, check, meta = train_checked(pseudo, check_queries, "corpus", corpora.indexes[name], encoder,
                                                     config, pseudo_anchors(anchor_sets), progress)
                if check["passed"]:
                    store.save_expert(name, trained.write, meta)
                else:
                    logger.warning("%s", refusal(name, check))
                    refused[name] = check
            else:
                trained = train_and_save(store, name, corpora.opened[name], corpora.indexes[name], encoder, config,
                                         anchor_sets=anchor_sets, progress=progress)
            seconds[f"train:{name}"] = round(trained.seconds, 1)
    if multitask and MULTITASK not in store.expert_names():
        trained = train_expert(corpora.sources(expert_datasets), encoder,
                               TrainConfig.from_fields(overrides.get(MULTITASK, {})), progress=progress)
        store.save_expert(MULTITASK, trained.write, trained.meta())
        seconds[f"train:{MULTITASK}"] = round(trained.seconds, 1)
    return refused


def _build_every_router(store: RouterDirectory, corpora: _Corpora, expert_datasets: list[str], encoder,
                        max_queries: int, progress: bool, route_on: str, seconds: dict,
                        unlabelled: bool = False) -> tuple[dict, str]:
    """Every router kind fitted on the expert datasets (``unlabelled``: on pseudo-queries from their corpora);
    ``(routers by kind, the default router)``."""
    t = time.perf_counter()
    sources = corpora.sources(expert_datasets)
    if unlabelled:
        sources = [(routing_queries(ds, max_queries), index) for ds, index in sources]
    fit_routers(store, ROUTED, sources, {name: corpora.lexical[name] for name in expert_datasets}, encoder,
                max_queries, "convex", progress, lambda kind: {}, route_on)
    routers = {kind: store.load_router(kind) for kind in ROUTED}
    default = store.default_router()
    seconds["build-routers"] = round(time.perf_counter() - t, 1)
    return routers, default


def _evaluate_all(store: RouterDirectory, corpora: _Corpora, expert_datasets: list[str], eval_datasets: list[str],
                  encoder: MultiExpertEncoder, routers: dict, default: str, vector_cache: Path,
                  seconds: dict) -> tuple[list, dict, object]:
    """Every system on every eval dataset's test split; ``(rows, dataset -> expert, the hybrids' fusion)``."""
    own = store.domain_experts()
    candidates = system_names(store.candidates())
    experts = [own[d] for d in expert_datasets if d in own]
    systems = [BASE_EXPERT, *([MULTITASK] if MULTITASK in store.expert_names() else []), BM25, hybrid(BASE_EXPERT),
               *ROUTED, DEFAULT, *ORACLES, *[f"expert:{e}" for e in experts], *[hybrid(e) for e in experts]]
    keys = {name: expert_key(store, name) for name in encoder.names}
    fusion = store.load_fusion()
    results = []
    t = time.perf_counter()
    for name in eval_datasets:
        run = SplitRun(corpora.opened[name], "test", encoder, corpora.indexes[name], routers, candidates,
                       vector_cache=vector_cache, expert_keys=keys, lexical=corpora.lexical[name],
                       fusion=fusion, aliases={DEFAULT: default})
        results += [run.run(system) for system in systems]
    seconds["evaluate"] = round(time.perf_counter() - t, 1)
    return results, own, fusion


def run_comparison(data_dir, router_dir, cache_dir, expert_datasets: Sequence[str] = (),
                   eval_datasets: Sequence[str] = (), model: str | None = None,
                   overrides: dict[str, dict] | None = None, max_queries: int = 500, multitask: bool = True,
                   index_type: str = "flat", progress: bool = False, backend: IndexBackend | None = None,
                   route_on: str = "embeddings", unlabelled: bool = False) -> Comparison:
    """``benchmark``: train the experts that are missing (one per expert dataset, anchored on the others, plus the
    multi-task baseline), build every router, and evaluate every system on every eval dataset's test split.
    Defaults: the shared data's expert datasets, evaluated together with the no-expert ones present. Query
    vectors are cached under ``cache_dir`` (None: the default cache directory, as for the indexes).

    ``unlabelled``: not one judgment before the final scores: every expert is trained on pseudo-queries from its
    corpus and kept only if it passes the self-check (``experts.workflows.unlabelled``), the routers are fitted on
    pseudo-queries (``experts.pseudo.routing_queries``), and there is no multi-task expert; test qrels are read only
    to score."""
    from eval.data import resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    index_config = _check_comparison(max_queries, route_on, index_type, overrides)
    expert_datasets = list(dict.fromkeys(expert_datasets or DEFAULT_EXPERT_DATASETS))  # twice counts once
    eval_datasets = list(dict.fromkeys(eval_datasets or [*expert_datasets,
                                                         *[d for d in NO_EXPERT_DATASETS if (data_dir / d).is_dir()]]))
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    corpora = _Corpora({name: open_dataset(data_dir, name, judged=not unlabelled or name in eval_datasets)
                        for name in dict.fromkeys([*expert_datasets, *eval_datasets])})
    for name in eval_datasets:
        corpora.opened[name].qrels("test")
    encoder = MultiExpertEncoder(load_encoder(model))
    store = RouterDirectory(router_dir, encoder.info, create=True)
    if unlabelled:
        _check_unlabelled_store(store)
    _index_all(corpora, backend or FaissBackend(cache_dir), encoder.base, index_config, progress, seconds)
    refused = _train_missing(store, corpora, expert_datasets, encoder.base, overrides or {},
                             multitask and not unlabelled, progress, seconds, unlabelled)
    store.load_into(encoder)
    routers, default = _build_every_router(store, corpora, expert_datasets, encoder, max_queries, progress, route_on,
                                           seconds, unlabelled)
    results, own, fusion = _evaluate_all(store, corpora, expert_datasets, eval_datasets, encoder, routers, default,
                                         cache_dir / "query-vectors", seconds)
    seconds["total"] = round(time.perf_counter() - started, 1)
    return Comparison(results, list(expert_datasets), list(eval_datasets), own, seconds, default,
                      {kind: routers[kind].info.get("fold_gain") for kind in ROUTED}, fusion.to_json(), refused)


def _check_unlabelled_store(store: RouterDirectory) -> None:
    """``benchmark --unlabelled`` reuses only experts trained without judgments: refuse a directory holding others."""
    labelled = [name for name in store.expert_names() if "unlabelled" not in store.expert_info(name)]
    if labelled:
        raise ValueError(f"benchmark --unlabelled: {store.root} holds experts trained with judgments "
                         f"({', '.join(labelled)}); give a new router directory")


def _summary(comparison: Comparison) -> dict:
    """What the results JSON holds beside the rows."""
    return {"default_system": comparison.default, "fold_gains": comparison.fold_gains, "fusion": comparison.fusion,
            "routing": comparison.routing(), "refused_experts": comparison.refused, "seconds": comparison.seconds}


def benchmark_results(comparison: Comparison) -> dict:
    """The results JSON ``benchmark`` writes: every row, the default router, the routers' fold gains, the hybrids'
    fusion, the routing accuracy and confusion, and the timings."""
    return {**results_json(comparison.results), **_summary(comparison)}


def run_benchmark(data_dir, router_dir, cache_dir, expert_datasets: Sequence[str] = (),
                  eval_datasets: Sequence[str] = (), *, output_json: str | os.PathLike | None = None,
                  markdown: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
                  train_overrides: str | os.PathLike | None = None, **settings) -> tuple[Comparison, str]:
    """``routerretriever benchmark``: ``run_comparison`` with the per-dataset training settings of
    ``train_overrides`` (default: ``DEFAULT_OVERRIDES``), then the results JSON at ``output_json`` (``-``:
    standard output; ``benchmark_results`` gives the same dict) and the tables at ``markdown`` and the confusion
    image at ``plot`` when given. ``settings``: ``run_comparison``'s keyword arguments. Returns the comparison and
    the tables' text."""
    comparison = run_comparison(data_dir, router_dir, cache_dir, expert_datasets, eval_datasets,
                                overrides=load_overrides(train_overrides or DEFAULT_OVERRIDES), **settings)
    if output_json is not None:
        write_results_json(comparison.results, output_json, _summary(comparison))
    return comparison, write_report(comparison, markdown, plot)
