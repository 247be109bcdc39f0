"""``routerretriever evaluate``: load the base model and the systems asked for, open each dataset's indexes (or
the one index given with its own queries and qrels files), and run every system on every split
(``eval.runs.SplitRun``), writing TREC runs and the results JSON."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from eval.data import SplitFiles, check_judged_docs, load_split, open_dataset
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

__all__ = ["check_evaluate_options", "evaluate_index", "evaluate_systems"]


def check_evaluate_options(datasets: Sequence[str], index=None, queries=None, qrels=None) -> None:
    """What ``evaluate`` is to measure: ``--dataset`` (repeatable), or ``--index`` with ``--queries`` and
    ``--qrels``; anything else is refused here (the CLI shows it as a usage error)."""
    if index is not None and datasets:
        raise ValueError("--index and --dataset cannot be used together: evaluate an index with its own --queries "
                         "and --qrels, or BEIR datasets by name")
    if index is None and (queries is not None or qrels is not None):
        raise ValueError("--queries and --qrels are for --index (a --dataset has its own)")
    if index is not None and (queries is None or qrels is None):
        raise ValueError("--index needs --queries (JSONL) and --qrels (TSV) to evaluate against")
    if index is None and not datasets:
        raise ValueError("give --dataset NAME (repeatable), or --index DIR with --queries and --qrels")


def _check_trec_ids(query_ids: Iterable[str], doc_ids: Iterable[str], queries_where, docs_where) -> None:
    """Every id a run may hold fits a TREC line, before any work."""
    for query_id in query_ids:
        check_trec_field(query_id, f"{queries_where}: query id")
    for doc_id in doc_ids:
        check_trec_field(doc_id, f"{docs_where}: document id")


def _run_splits(splits: Iterator[tuple], split: str, systems: list[str], encoder: MultiExpertEncoder, loaded,
                run_dir: Path | None, output_json) -> list[EvalResult]:
    """Every system on each ``(dataset or SplitFiles, dense index, lexical index or None)`` of ``splits``,
    sharing query vectors per split: the rows, their TREC runs in ``run_dir``, and the results JSON."""
    routers, candidates, fusion, aliases = loaded
    rows = []
    for ds, index, lexical in splits:
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
    return rows


def _load(systems: list[str], router_dir, model) -> tuple[MultiExpertEncoder, tuple, bool]:
    """The base model with the experts and routers ``systems`` need: ``(encoder, load_systems's result, whether a
    lexical index is needed)``."""
    encoder = MultiExpertEncoder(load_encoder(model))
    loaded = load_systems(systems, router_dir, encoder)
    routers = loaded[0]
    needs_lexical = any(is_lexical(parse_system(s)[1] or "") for s in systems) or any(
        is_lexical(e) for router in routers.values() for e in router.systems) or any(s in ORACLES for s in systems)
    return encoder, loaded, needs_lexical


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
        if run_dir is not None:
            _check_trec_ids(ds.split(split).queries, ds.doc_ids(), ds.queries_path, ds.corpus_path)
    encoder, loaded, needs_lexical = _load(systems, router_dir, model)
    backend = backend or FaissBackend(cache_dir)
    splits = ((ds, *backend.ensure(ds, encoder.base, IndexConfig(index_type=index_type), lexical=needs_lexical,
                                   progress=progress)) for ds in opened)  # each built or opened when its turn comes
    rows = _run_splits(splits, split, systems, encoder, loaded, run_dir, output_json)
    return rows, loaded[3].get(DEFAULT)


def evaluate_index(index, queries: str | os.PathLike, qrels: str | os.PathLike, systems: Sequence[str],
                   split: str = "test", router_dir: Path | None = None, model: str | None = None,
                   run_dir: Path | None = None, backend: IndexBackend | None = None,
                   output_json: str | os.PathLike | None = None) -> tuple[list[EvalResult], str | None]:
    """``evaluate --index``: as ``evaluate_systems``, on an index built by ``index --output DIR`` (FAISS; its BM25
    index beside it) or a Milvus collection of ``backend``, with the user's own queries JSONL and qrels TSV (rows
    labelled ``split``; the dataset is the index directory's or collection's name). Before any model loads: the
    files parse, every judged query is in ``queries`` and every judged document in the index."""
    systems = list(dict.fromkeys(systems))
    check_systems(systems, router_dir)
    if run_dir is not None:
        check_output_dir(run_dir)
    data = load_split(queries, qrels, split)
    backend = backend or FaissBackend()
    dense = backend.open(index)  # checked against the model by SplitRun, once it is loaded
    name = Path(os.path.abspath(index)).name  # "." or "a/.." name their directory (a collection: itself)
    check_judged_docs(data.qrels, dense.doc_ids, qrels, f"index {index}")
    if run_dir is not None:
        _check_trec_ids(data.queries, dense.doc_ids, queries, f"index {index}")
    encoder, loaded, needs_lexical = _load(systems, router_dir, model)
    lexical = backend.lexical_of(dense) if needs_lexical else None
    rows = _run_splits(iter([(SplitFiles(name, data), dense, lexical)]), split, systems, encoder, loaded, run_dir,
                       output_json)
    return rows, loaded[3].get(DEFAULT)
