"""Building: LoRA *query* experts on the frozen base encoder, routing labels, and the workflows that build
and compare. Imports ``retriever`` and ``eval``.

- ``pairs``     — training examples from a BEIR split's qrels (positives: score >= 1), held-out slices, anchors.
- ``train``     — contrastive (InfoNCE) training against cached frozen-base document vectors, with peft.
- ``routing_cache`` — every expert scored on training queries (cached), best-system labels (the routing data).
- ``unfamiliar_scores`` — what ``auto:base`` decides from on those queries (cached with the base's scores) and its
  score there, decided as search decides for unfamiliar queries.
- ``routing``   — routers fitted on that data, refitted for the current experts, the default router chosen.
- ``export``    — exports as sentence-transformers query/document models: one expert (LoRA merged on the query
  side, plain modules), or a router with its experts (``retriever.adapters.st_model.RoutedEncoder``).
- ``model_card`` — the exports' model cards (what is routed among, how it was measured).
- ``workflows`` — every CLI command as a library function: index, search, add/remove/list/export an expert,
  build routers, evaluate, the paper-style comparison (a package, one module per group).

The reserved expert ``base`` is the base model itself. Tested in ``tests/test_experts.py``,
``test_routing.py``, ``test_cli.py``, ``test_export.py``.
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Example": "experts.pairs",
    "anchor_texts": "experts.pairs",
    "split_heldout": "experts.pairs",
    "training_examples": "experts.pairs",
    "Negatives": "experts.config",
    "TrainConfig": "experts.config",
    "TrainedExpert": "experts.train",
    "train_expert": "experts.train",
    "build_router": "experts.routing",
    "refresh_routers": "experts.routing",
    "routing_data": "experts.routing_cache",
    "export_expert": "experts.export",
    "export_routed": "experts.export",
    "add_expert": "experts.workflows",
    "build_routers": "experts.workflows",
    "load_overrides": "experts.workflows",
    "remove_expert": "experts.workflows",
    "run_comparison": "experts.workflows",
    "train_and_save": "experts.workflows",
    "TrainingSource": "experts.train",
    "batch_loss": "experts.train",
    "epoch_batches": "experts.train",
    "heldout_split": "experts.train",
    "cached_routing_data": "experts.routing_cache",
    "cached_auto_systems": "experts.unfamiliar_scores",
    "DEFAULT_EXPERT_DATASETS": "experts.workflows",
    "evaluate_systems": "experts.workflows",
    "choose_default_router": "experts.routing",
    "expert_key": "experts.routing_cache",
    "lexical_key": "experts.routing_cache",
    "score_experts": "experts.routing_cache",
    "routing_sample": "experts.routing_cache",
    "prefix_layer": "experts.routing_cache",
    "prefix_file": "experts.routing_cache",
    "hybrid_label": "experts.routing_cache",
    "lora_query_model": "experts.train",
    "anchor_loss": "experts.train",
})
