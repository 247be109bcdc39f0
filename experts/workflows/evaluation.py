"""``routerretriever evaluate``: load the base model and the systems asked for, open each dataset's indexes,
and run every system on every dataset's split (``eval.runs.SplitRun``), writing TREC runs and the results JSON."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from eval.data import open_dataset
from eval.metrics import check_trec_field, write_trec_run
from eval.runs import (
    DEFAULT,
    ORACLES,
    EvalResult,
    SplitRun,
    check_systems,
    load_systems,
    parse_system,
    write_results_json,
)
from retriever.encoding.encoder import load_encoder
from retriever.encoding.expert_encoder import MultiExpertEncoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.index.base import IndexConfig
from retriever.ranking.systems import is_lexical
from retriever.storage.files import check_output_dir

__all__ = ["evaluate_systems"]


def evaluate_systems(data_dir, datasets: Sequence[str], systems: Sequence[str], split: str = "test",
                     router_dir: Path | None = None, model: str | None = None, cache_dir=None,
                     index_type: str = "flat", run_dir: Path | None = None, progress: bool = False,
                     backend: IndexBackend | None = None, output_json: str | os.PathLike | None = None
                     ) -> tuple[list[EvalResult], str | None]:
    """``evaluate``: every system on every dataset's ``split`` (a system or dataset given twice counts once),
    sharing query vectors per split; TREC runs in ``run_dir``, and with ``output_json`` the rows and the default
    router as ``{"results": [...], "default_system": ...}`` (``-``: standard output). Returns the rows and the
    router directory's default router (None without one)."""
    systems = list(dict.fromkeys(systems))
    check_systems(systems, router_dir)  # before any data or model loads (load_systems checks again, cheaply)
    if run_dir is not None:
        check_output_dir(run_dir)
    opened = [open_dataset(data_dir, name) for name in dict.fromkeys(datasets)]  # a dataset given twice: once
    for ds in opened:
        ds.qrels(split)
        if run_dir is not None:  # every id a run may hold fits a TREC line, before any work
            for query_id in ds.split(split).queries:
                check_trec_field(query_id, f"{ds.queries_path}: query id")
            for doc_id in ds.doc_ids():
                check_trec_field(doc_id, f"{ds.corpus_path}: document id")
    encoder = MultiExpertEncoder(load_encoder(model))
    routers, candidates, fusion, aliases = load_systems(systems, router_dir, encoder)
    backend = backend or FaissBackend(cache_dir)
    needs_lexical = any(is_lexical(parse_system(s)[1] or "") for s in systems) or any(
        is_lexical(e) for router in routers.values() for e in router.systems) or any(s in ORACLES for s in systems)
    rows = []
    for ds in opened:
        index, lexical = backend.ensure(ds, encoder.base, IndexConfig(index_type=index_type), lexical=needs_lexical,
                                        progress=progress)
        run = SplitRun(ds, split, encoder, index, routers, candidates, lexical=lexical, fusion=fusion,
                       aliases=aliases)
        for system in systems:
            result = run.run(system)
            rows.append(result)
            if run_dir is not None:
                tag = system.replace(":", "-")
                write_trec_run(result.results, Path(run_dir) / f"{ds.name}.{split}.{tag}.trec", tag=tag)
    if output_json is not None:
        write_results_json(rows, output_json, {"default_system": aliases.get(DEFAULT)})
    return rows, aliases.get(DEFAULT)
