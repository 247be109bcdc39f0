"""The workflows the CLI runs, as library functions: one call per command, with the same result as the command
(files written, values returned); ``cli.py`` only declares options, calls one of these and prints.

Each reuses what is saved (corpus indexes in the cache, experts and routing scores in the router directory),
checks its input before any long work, and loads the models and opens the index backends it needs.

- ``indexing``     — ``index``: encode a corpus (in process or on Ray actors) into a dense and a BM25 index.
- ``collections``  — ``add``/``delete``: change a named index (only new documents encoded), as one new version.
- ``searching``    — ``search``: base-only or routed search over an index.
- ``expert_store`` — ``train-expert`` (train, save, refit the routers), ``experts remove/list/export``.
- ``unlabelled``   — ``train-expert --unlabelled``: an expert from pseudo-labels (a dataset's corpus or a named
  index's documents), kept only past a self-check.
- ``exporting``    — ``export``: a router and its experts as one sentence-transformers model.
- ``routers``      — ``build-router``: score every system, label queries, fit routers, choose the default.
- ``evaluation``   — ``evaluate``: systems on datasets' splits, or on an index with its own queries and qrels
  (``eval.runs.SplitRun``), TREC runs, results JSON.
- ``benchmark``    — ``benchmark``: the paper-style comparison, its results JSON, tables and plot.
- ``common``       — what several share (opening a dataset, or a named index as a corpus, with its indexes;
  routing settings' checks).

Tested in ``tests/test_cli.py``, ``test_changes.py``, ``test_runs.py``, ``test_experts.py``, ``test_routing.py``,
``test_bad_input.py``, ``test_export.py``, ``test_collections.py``, ``test_pseudo.py``.
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Indexed": "experts.workflows.indexing",
    "check_encoder_options": "experts.workflows.indexing",
    "check_source_options": "experts.workflows.indexing",
    "index_dataset": "experts.workflows.indexing",
    "index_source": "experts.workflows.indexing",
    "Changed": "experts.workflows.collections",
    "add_documents": "experts.workflows.collections",
    "delete_documents": "experts.workflows.collections",
    "check_search_options": "experts.workflows.searching",
    "search_index": "experts.workflows.searching",
    "result_record": "experts.workflows.searching",
    "add_expert": "experts.workflows.expert_store",
    "add_unlabelled_expert": "experts.workflows.unlabelled",
    "check_unlabelled_options": "experts.workflows.unlabelled",
    "describe_experts": "experts.workflows.expert_store",
    "expert_records": "experts.workflows.expert_store",
    "export_expert_model": "experts.workflows.expert_store",
    "remove_expert": "experts.workflows.expert_store",
    "train_and_save": "experts.workflows.expert_store",
    "export_routed_model": "experts.workflows.exporting",
    "build_routers": "experts.workflows.routers",
    "fit_routers": "experts.workflows.routers",
    "evaluate_systems": "experts.workflows.evaluation",
    "evaluate_index": "experts.workflows.evaluation",
    "DEFAULT_EXPERT_DATASETS": "experts.workflows.benchmark",
    "DEFAULT_OVERRIDES": "experts.workflows.benchmark",
    "NO_EXPERT_DATASETS": "experts.workflows.benchmark",
    "benchmark_results": "experts.workflows.benchmark",
    "load_overrides": "experts.workflows.benchmark",
    "run_benchmark": "experts.workflows.benchmark",
    "run_comparison": "experts.workflows.benchmark",
})
